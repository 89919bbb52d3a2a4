mod cli;
mod interop;
mod mirror;
mod oci;
mod signer;
mod support;
