//! Real public-good and staging bundles, and a negative twin per check: each twin changes one
//! thing and must fail at its own check with its own error variant.

mod identities;
mod vectors;
