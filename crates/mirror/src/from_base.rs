//! The listed files of a thin bundle that its base carries, as verification reports them.

/// The listed files a thin bundle does not carry (they come from its base), in manifest
/// order, packed into one buffer: a thin update of a 1,000,000-file bundle lists nearly every
/// file here, ~48 MB packed against ~75 MB as a `Vec<String>` (a heap block per path), and
/// that list is alive while `apply` and thin `sign` hold their file index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FromBase {
    text: String,
    ends: Vec<usize>,
}

impl FromBase {
    pub(crate) fn push(&mut self, path: &str) {
        self.text.push_str(path);
        self.ends.push(self.text.len());
    }

    /// Give back the growth slack once the list is complete.
    pub(crate) fn done(mut self) -> Self {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
        self
    }

    /// How many files come from the base.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`-th such file, in manifest order.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1],
        };
        self.text.get(start..end)
    }

    /// The files, in manifest order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Is `path` one of them? (A scan: for the few `scripts/*.sh` that `unpack` asks about.)
    pub fn contains(&self, path: &str) -> bool {
        self.iter().any(|p| p == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_base_keeps_every_path_in_order_and_answers_membership() {
        let empty = FromBase::default();
        assert!(empty.is_empty() && empty.get(0).is_none() && !empty.contains(""));
        let paths = [
            "advisories/a.json",
            "",
            "advisories/ü/b.json",
            "scripts/load.sh",
        ];
        let mut fb = FromBase::default();
        for p in paths {
            fb.push(p);
        }
        let fb = fb.done();
        assert_eq!(fb.len(), 4);
        assert_eq!(fb.iter().collect::<Vec<_>>(), paths);
        assert_eq!(fb.get(2), Some("advisories/ü/b.json"));
        assert_eq!(fb.get(4), None);
        assert!(fb.contains("scripts/load.sh") && fb.contains(""));
        // Whole paths only: a prefix or two neighbours run together are not members.
        assert!(!fb.contains("scripts/load") && !fb.contains("advisories/a.jsonadvisories"));
    }
}
