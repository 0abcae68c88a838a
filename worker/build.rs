//! Embeds libtorch's library folder as an rpath in the worker binary, so tests find
//! `libtorch_cpu.so` without `LD_LIBRARY_PATH`. `.cargo/config.toml` points `LIBTORCH` at the
//! checkout's `.libtorch` link into the virtualenv (made by `scripts/setup.sh`); the rpath keeps
//! the link, not its target, so re-running set-up with a new virtualenv needs no rebuild.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&dir).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        println!("cargo:rustc-env=BEAMLINE_LIBTORCH_LIB={}", lib.display());
    }
}
