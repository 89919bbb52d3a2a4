//! The predicate catalogue: the allow-list of predicate types Stella signs (SPEC §2) and the
//! check against it. Anything not in the catalogue is refused by the Signer service and needs
//! `--allow-any-predicate` on the CLI.

pub const PROMOTION_V1: &str = "stella.ops/promotion@v1";
pub const SBOM_V1: &str = "stella.ops/sbom@v1";
pub(crate) const VEX_V1: &str = "stella.ops/vex@v1";
pub(crate) const VEX_DECISION_V1: &str = "stella.ops/vexDecision@v1";
pub(crate) const REPLAY_V1: &str = "stella.ops/replay@v1";
pub(crate) const POLICY_V1: &str = "stella.ops/policy@v1";
pub const EVIDENCE_V1: &str = "stella.ops/evidence@v1";
pub(crate) const GRAPH_V1: &str = "stella.ops/graph@v1";
pub(crate) const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
pub const SPDX_DOCUMENT: &str = "https://spdx.dev/Document";
pub const CYCLONEDX_BOM: &str = "https://cyclonedx.org/bom";
pub(crate) const OPENVEX_V020: &str = "https://openvex.dev/ns/v0.2.0";

/// Every predicate type in the catalogue, StellaOps types first.
pub(crate) const ALLOWED: &[&str] = &[
    PROMOTION_V1,
    SBOM_V1,
    VEX_V1,
    VEX_DECISION_V1,
    REPLAY_V1,
    POLICY_V1,
    EVIDENCE_V1,
    GRAPH_V1,
    SLSA_PROVENANCE_V1,
    SPDX_DOCUMENT,
    CYCLONEDX_BOM,
    OPENVEX_V020,
];

/// The catalogue as a slice (the seeds' `GetAllowedPredicateTypes`).
pub fn allowed_types() -> &'static [&'static str] {
    ALLOWED
}

/// Is `t` in the catalogue? Exact, case-sensitive match: predicate types are URIs.
pub fn is_allowed(t: &str) -> bool {
    ALLOWED.contains(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue() {
        assert_eq!(allowed_types().len(), 12);
        for t in ALLOWED {
            assert!(is_allowed(t));
        }
        assert!(!is_allowed("stella.ops/promotion@v2"));
        assert!(!is_allowed("STELLA.OPS/promotion@v1"));
        assert!(!is_allowed(""));
    }
}
