mod cli;
mod interop;
mod support;
