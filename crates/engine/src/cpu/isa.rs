//! The widest vector instruction set the kernels may use: `BEAMLINE_CPU_ISA=avx2` keeps them
//! to AVX2 on a CPU that has AVX-512 (and AVX-512 BF16, AMX), as oneDNN's `ONEDNN_MAX_CPU_ISA`
//! does. A fleet mixes machines; this reproduces on one of them the results and speed that an
//! AVX2-only one gives, and lets a test of the AVX2 kernels run their real dispatch anywhere.

use std::sync::OnceLock;

/// The environment variable that caps the instruction set.
pub const ENV: &str = "BEAMLINE_CPU_ISA";

/// A cap on the kernels' instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Whatever the CPU has (the default, `auto`).
    Native,
    /// AVX2, FMA and F16C only: no AVX-512, AVX-512 BF16 or AMX kernel runs.
    Avx2,
}

impl Isa {
    /// Reads a value of [`ENV`]: `auto` (or nothing) or `avx2`.
    pub fn parse(value: &str) -> Option<Isa> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "auto" | "native" => Some(Isa::Native),
            "avx2" => Some(Isa::Avx2),
            _ => None,
        }
    }

    /// The value of [`ENV`] that selects this cap.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Native => "auto",
            Isa::Avx2 => "avx2",
        }
    }
}

/// The cap this process runs under, read from [`ENV`] once; an unknown value is logged and
/// ignored (the kernels then use what the CPU has).
pub fn cap() -> Isa {
    static CAP: OnceLock<Isa> = OnceLock::new();
    *CAP.get_or_init(|| match std::env::var(ENV) {
        Err(_) => Isa::Native,
        Ok(value) => Isa::parse(&value).unwrap_or_else(|| {
            tracing::warn!(%value, "{ENV} is neither `auto` nor `avx2`; using what the CPU has");
            Isa::Native
        }),
    })
}

/// Whether kernels beyond AVX2 (AVX-512 and up) may run, where the CPU has them.
pub fn allows_avx512() -> bool {
    cap() == Isa::Native
}

/// Whether the CPU is Intel's: `vdpbf16ps` runs at half the rate there that it runs at on
/// AMD's cores, which decides between kernels.
#[cfg(target_arch = "x86_64")]
pub fn intel() -> bool {
    // CPUID leaf 0: the vendor string in EBX, EDX, ECX.
    let leaf0 = std::arch::x86_64::__cpuid(0);
    [leaf0.ebx, leaf0.edx, leaf0.ecx].map(u32::to_le_bytes) == [*b"Genu", *b"ineI", *b"ntel"]
}

#[cfg(not(target_arch = "x86_64"))]
pub fn intel() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPUID vendor check agrees with the kernel's own reading of the CPU.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn intel_reads_the_vendor() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if let Some(line) = cpuinfo.lines().find(|l| l.starts_with("vendor_id")) {
            assert_eq!(intel(), line.ends_with("GenuineIntel"), "{line}");
        }
    }

    #[test]
    fn reads_auto_and_avx2_and_rejects_the_rest() {
        assert_eq!(Isa::parse(""), Some(Isa::Native));
        assert_eq!(Isa::parse("auto"), Some(Isa::Native));
        assert_eq!(Isa::parse(" AVX2 "), Some(Isa::Avx2));
        assert_eq!(Isa::parse("avx512"), None);
    }
}
