//! Names this build's CPU architecture the way manifests do (`FLOE_NATIVE_ARCH`, read by
//! `artifact::native_arch`). `cfg!(target_arch)` says `arm` for every 32-bit ARM and stable
//! Rust exposes no ARM sub-architecture to `cfg`, but the target triple does: a bundle for
//! ARMv7 (`armv7-unknown-linux-gnueabihf`, Raspberry Pi 2 and later in 32-bit mode) must not
//! be offered to an ARMv6 build (`arm-unknown-linux-gnueabihf`, Pi Zero and Pi 1).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let name = if arch != "arm" {
        arch
    } else if target.starts_with("armv7") || target.starts_with("thumbv7") {
        "armv7".to_string()
    } else {
        "armv6".to_string()
    };
    println!("cargo:rustc-env=FLOE_NATIVE_ARCH={name}");
}
