mod cli;
mod interop;
mod mirror;
mod mirror_oci;
mod oci;
mod signer;
mod sigstore;
mod support;
