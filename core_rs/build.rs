//! Links the system's `OpenJPH` (Debian's libopenjph-dev) for HTJ2K when pkg-config
//! finds it, through the small C shim in `src/codec/openjph_shim.cpp`, and sets
//! `cfg(openjph_system)`. Without it, HTJ2K encodes with the pure-Rust openjph-core,
//! as before (decision 0035). Decoding is `OpenJPEG`'s either way.
//!
//! `PACS_EDGE_OPENJPH`: `auto` (the default) uses the library when found; `off`
//! builds the fallback even when it is installed (to test that path); `required`
//! fails the build when it is missing (CI, so the system path is the one tested).

use std::env;
use std::path::{Path, PathBuf};

const HEADER: &str = "openjph/ojph_codestream.h";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(openjph_system)");
    println!("cargo::rerun-if-env-changed=PACS_EDGE_OPENJPH");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo::rerun-if-changed=src/codec/openjph_shim.cpp");
    let mode = env::var("PACS_EDGE_OPENJPH").unwrap_or_else(|_| "auto".into());
    match mode.as_str() {
        "off" => return,
        "auto" | "required" => {}
        other => panic!("PACS_EDGE_OPENJPH is {other:?}: use auto, off or required"),
    }
    match find() {
        Ok(found) => build_shim(&found),
        Err(why) if mode == "required" => panic!(
            "PACS_EDGE_OPENJPH=required, but {why}. Install it with `make build-deps` \
             (Debian: apt-get install libopenjph-dev)."
        ),
        Err(why) => println!(
            "cargo::warning=HTJ2K encoding falls back to openjph-core: {why} \
             (install libopenjph-dev for OpenJPH's speed)"
        ),
    }
}

struct Found {
    include: Vec<PathBuf>,
    link: Vec<PathBuf>,
    libs: Vec<String>,
}

/// `OpenJPH` through pkg-config. Debian bookworm's openjph.pc (0.9.0-3) names no
/// libraries and no include directory (its variables are empty), so an empty answer
/// means the library's own name and the compiler's default directories, once the
/// header is there.
fn find() -> Result<Found, String> {
    let lib = pkg_config::Config::new()
        .cargo_metadata(false)
        .probe("openjph")
        .map_err(|e| format!("pkg-config does not find openjph ({e})"))?;
    let mut search = lib.include_paths.clone();
    search.extend(["/usr/include", "/usr/local/include"].map(PathBuf::from));
    if !search.iter().any(|dir| dir.join(HEADER).is_file()) {
        return Err(format!(
            "pkg-config finds openjph, but not its header {HEADER}"
        ));
    }
    for pc in env::split_paths(&env::var_os("PKG_CONFIG_PATH").unwrap_or_default())
        .chain(["/usr/lib/x86_64-linux-gnu/pkgconfig", "/usr/lib/pkgconfig"].map(PathBuf::from))
    {
        let file = pc.join("openjph.pc");
        if file.is_file() {
            println!("cargo::rerun-if-changed={}", file.display());
        }
    }
    let libs = if lib.libs.is_empty() {
        vec!["openjph".to_owned()]
    } else {
        lib.libs
    };
    Ok(Found {
        include: lib.include_paths,
        link: lib.link_paths,
        libs,
    })
}

fn build_shim(found: &Found) {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++14")
        .file(Path::new("src/codec/openjph_shim.cpp"))
        .warnings(true)
        .extra_warnings(true);
    for dir in &found.include {
        build.include(dir);
    }
    build.compile("openjph_shim");
    for dir in &found.link {
        println!("cargo::rustc-link-search=native={}", dir.display());
    }
    for lib in &found.libs {
        println!("cargo::rustc-link-lib=dylib={lib}");
    }
    println!("cargo::rustc-cfg=openjph_system");
}
