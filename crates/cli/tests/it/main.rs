mod cli;
mod interop;
mod mirror;
mod mirror_oci;
mod oci;
mod pkcs11;
mod signer;
mod support;
