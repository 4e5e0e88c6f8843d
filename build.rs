//! Rebuilds the crate when a file of the `/dev` page is added, changed or removed: they
//! are embedded in the binary (`server::dev::assets`), and a file added to the folder
//! is not otherwise something the compiler has read.
fn main() {
    println!("cargo:rerun-if-changed=src/server/dev/assets");
    println!("cargo:rerun-if-changed=build.rs");
}
