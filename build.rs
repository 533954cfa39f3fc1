//! Build-time link settings for the executables.
//!
//! On Linux with glibc the binaries are linked with packed relative
//! relocations (`-z pack-relative-relocs`, DT_RELR, glibc ≥ 2.36): a
//! position-independent Rust binary otherwise carries ~0.5 MB of relocation
//! entries that the dynamic loader reads at every start, and that every
//! process of the agent — the holder that must stay small above all — then
//! keeps resident. Linkers that do not know the option ignore it with a
//! warning. (The shipped parser files are compiled in by pmon-core's build.rs.)

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
