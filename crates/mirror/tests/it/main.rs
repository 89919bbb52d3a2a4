//! The mirror crate's own integration suite: the library API end to end (create → sign →
//! verify → pack → verify the stream → unpack), and the attack cases of `tests/attacks/`,
//! one folder each, every one refused at the stage it attacks.

mod archive_stream;
mod attacks;
mod common;
mod failures;
mod fixtures;
mod roundtrip;
mod signstream;
mod source;
mod streamed;
mod thin_create;
