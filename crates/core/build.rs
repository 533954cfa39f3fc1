//! Every `parsers/*.yml` of the repository (except the documentation file
//! `EXAMPLE.yml`) is compiled into the library, so an installed agent knows
//! the shipped formats without a checkout: adding a file there needs no Rust
//! change.

use std::fmt::Write;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let dir = manifest.join("../../parsers");
    println!("cargo:rerun-if-changed={}", dir.display());
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
