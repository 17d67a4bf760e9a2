//! Links `CharLS`, the JPEG-LS reference implementation (Debian: libcharls-dev), which
//! `codec::charls` calls through its C API (docs/decisions/0015).

fn main() {
    println!("cargo:rustc-link-lib=charls");
}
