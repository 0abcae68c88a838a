use super::*;
use std::ffi::c_void;
use std::sync::atomic::Ordering;

/// Whether start-up could make its file here, asked the way it asks: the test expects the
/// file exactly where one can be made (not on a machine whose temporary directories are
/// all tmpfs).
fn a_file_could_be_made() -> bool {
    std::env::var_os("BEAMLINE_STARTUP_HEAP").is_none() && imp::disk_backed_temp_dir()
}

/// Resident KiB of the start-up heap's mapping, from `/proc/self/smaps`.
fn heap_rss_kib() -> u64 {
    let base = imp::BASE.load(Ordering::Relaxed);
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut in_heap = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((start, _)) = range.split_once('-') {
                if let Ok(start) = usize::from_str_radix(start, 16) {
                    in_heap = start == base;
                    continue;
                }
            }
        }
        if let (true, Some(rss)) = (in_heap, line.strip_prefix("Rss:")) {
            return rss.trim().trim_end_matches("kB").trim().parse().unwrap();
        }
    }
    panic!("no mapping starts at the start-up heap's base {base:#x}");
}

#[test]
fn libtorchs_start_up_heap_is_in_the_file() {
    let heap = state();
    if !a_file_could_be_made() {
        assert!(!heap.in_file, "{heap:?}");
        return;
    }
    assert!(heap.in_file, "no file although one could be made");
    // libtorch's operator tables: about 60 MiB and a quarter million blocks with 2.11.
    assert!(heap.used_bytes > 16 << 20, "{heap:?}");
    assert!(heap.live_blocks > 50_000, "{heap:?}");
}

#[test]
fn dropped_pages_come_back_as_they_were_and_libtorch_still_runs() {
    let heap = state();
    if !heap.in_file {
        return;
    }
    let work = || {
        let x = tch::Tensor::arange(12, (tch::Kind::Float, tch::Device::Cpu)).view([3, 4]);
        x.matmul(&x.transpose(0, 1))
            .sum(tch::Kind::Float)
            .double_value(&[])
    };
    let before_work = work();
    let base = imp::BASE.load(Ordering::Relaxed);
    let checksum = || {
        // SAFETY: `[base, base + used_bytes)` is mapped readable and never unmapped; its
        // bytes are libtorch's blocks and the allocator's headers, read, not written.
        (0..heap.used_bytes)
            .step_by(4096)
            .map(|offset| {
                u64::from(unsafe { std::ptr::read_volatile((base + offset) as *const u8) })
            })
            .fold(0u64, |sum, byte| sum.wrapping_mul(31).wrapping_add(byte))
    };
    let sum = checksum();
    let resident = heap_rss_kib();
    let released = release_pages();
    let after = heap_rss_kib();
    assert!(released >= heap.used_bytes, "{released} of {heap:?}");
    assert!(
        resident as usize >= heap.used_bytes >> 11,
        "{resident} KiB resident of {heap:?}"
    );
    // Tests running libtorch ops meanwhile bring some pages back.
    assert!(
        after * 4 < resident,
        "{resident} KiB resident, {after} KiB after the release"
    );
    assert_eq!(checksum(), sum, "the pages read back the same");
    assert_eq!(work(), before_work);
}

#[test]
fn blocks_of_the_file_behave_like_mallocs_during_and_after_start_up() {
    if !state().in_file {
        return;
    }
    // Capturing again for a moment: other tests' allocations meanwhile land in the file
    // too, which is what start-up's threads see.
    imp::CAPTURING.store(true, Ordering::Release);
    // SAFETY: the C allocation contract, kept: every block is used within its size.
    let (grown, zeroed, leaked) = unsafe {
        let small = interpose::malloc(100).cast::<u8>();
        std::ptr::write_bytes(small, 0xff, 100);
        interpose::free(small.cast());
        let zeroed = interpose::calloc(25, 4).cast::<u8>();
        let block = interpose::malloc(40).cast::<u8>();
        for k in 0..40 {
            *block.add(k) = k as u8;
        }
        let grown = interpose::realloc(block.cast(), 4000).cast::<u8>();
        let leaked = interpose::malloc(64);
        (grown, zeroed, leaked)
    };
    imp::CAPTURING.store(false, Ordering::Release);
    // SAFETY: as above; blocks of the file stay valid after start-up.
    unsafe {
        assert!(imp::in_file(zeroed.cast()) && imp::in_file(grown.cast()));
        assert!(
            (0..100).all(|k| *zeroed.add(k) == 0),
            "calloc gave a reused block unzeroed"
        );
        assert!(interpose::malloc_usable_size(grown.cast()) >= 4000);
        assert!(
            (0..40).all(|k| *grown.add(k) == k as u8),
            "realloc in the file kept the bytes"
        );
        // After start-up a block of the file grows into glibc's heap.
        let moved = interpose::realloc(grown.cast(), 1 << 20).cast::<u8>();
        assert!(!imp::in_file(moved.cast()));
        assert!(
            (0..40).all(|k| *moved.add(k) == k as u8),
            "realloc out of the file kept the bytes"
        );
        interpose::free(moved.cast());
        interpose::free(zeroed.cast());
        interpose::free(leaked);
        let glibcs: *mut c_void = interpose::malloc(64);
        assert!(!imp::in_file(glibcs));
        interpose::free(glibcs);
    }
}

/// Run by `the_environment_turns_it_off` in a child process: prints what start-up did.
#[test]
#[ignore = "run by the_environment_turns_it_off"]
fn report_for_the_parent() {
    println!("start-up heap in file: {}", state().in_file);
}

#[test]
fn the_environment_turns_it_off() {
    let run = |setting: Option<&str>| {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child.args([
            "--exact",
            "startup_heap::tests::report_for_the_parent",
            "--ignored",
            "--nocapture",
        ]);
        match setting {
            Some(value) => child.env("BEAMLINE_STARTUP_HEAP", value),
            None => child.env_remove("BEAMLINE_STARTUP_HEAP"),
        };
        let output = child.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    assert!(run(Some("anonymous")).contains("start-up heap in file: false"));
    assert!(run(Some("off")).contains("start-up heap in file: false"));
    if imp::disk_backed_temp_dir() {
        assert!(run(None).contains("start-up heap in file: true"));
    }
}
