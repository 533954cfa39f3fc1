//! Build-time work: link settings, and the shipped parser files.
//!
//! On Linux with glibc the binary is linked with packed relative relocations
//! (`-z pack-relative-relocs`, DT_RELR, glibc ≥ 2.36): a position-independent
//! Rust binary otherwise carries ~0.5 MB of relocation entries that the
//! dynamic loader reads at every start, and that every process of the agent
//! — the holder that must stay small above all — then keeps resident. Linkers
//! that do not know the option ignore it with a warning.
//!
//! Every `parsers/*.yml` (except the documentation file `EXAMPLE.yml`) is
//! compiled into the binary, so an installed agent knows the shipped formats
//! without a checkout: adding a file there needs no Rust change.

use std::fmt::Write;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=parsers");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    shipped_parsers();
}

fn shipped_parsers() {
    let dir = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("parsers");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.extension().is_some_and(|x| x == "yml")
            && p.file_name().is_some_and(|n| n != "EXAMPLE.yml")
    });
    files.sort();
    let mut out = String::from("&[\n");
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push(']');
    let target =
        std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("shipped_parsers.rs");
    std::fs::write(target, out).unwrap();
}
