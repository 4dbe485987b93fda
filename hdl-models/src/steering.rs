//! The reference model of the interrupt steering table (`rtl/cv_steer.v`), in plain Rust.
//!
//! The host gives the NIC a set of MSI-X vectors, each an eventfd one host thread waits
//! on; entry `v` names the VP whose thread listens on vector `v`. A fault completion for
//! VP `p` raises the lowest vector steered to `p`, or the mapping vector when none is;
//! removing a VP hands its vectors to another VP. The differential test predicts every
//! vector the RTL raises with this model.

/// Vector -> VP table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SteeringModel {
    entries: Vec<Option<u32>>,
    map_vector: u8,
}

impl SteeringModel {
    /// A table of `vectors` empty entries; `map_vector` takes what no entry claims.
    pub fn new(vectors: usize, map_vector: u8) -> Self {
        Self {
            entries: vec![None; vectors],
            map_vector,
        }
    }

    /// Sets entry `vector` (ignored when out of range).
    pub fn write(&mut self, vector: u8, vp: Option<u32>) {
        if let Some(entry) = self.entries.get_mut(usize::from(vector)) {
            *entry = vp;
        }
    }

    /// VP `vp` is removed: its vectors now go to `to`.
    pub fn remove_vp(&mut self, vp: u32, to: u32) {
        for entry in self.entries.iter_mut().filter(|e| **e == Some(vp)) {
            *entry = Some(to);
        }
    }

    /// The vector a completion for `vp` raises.
    pub fn vector_for(&self, vp: u32) -> u8 {
        self.entries
            .iter()
            .position(|e| *e == Some(vp))
            .and_then(|v| u8::try_from(v).ok())
            .unwrap_or(self.map_vector)
    }

    /// The vector of mapping-change interrupts.
    pub fn map_vector(&self) -> u8 {
        self.map_vector
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_vector_wins_and_removal_moves_vectors() {
        let mut table = SteeringModel::new(8, 0);
        table.write(5, Some(3));
        table.write(2, Some(3));
        table.write(4, Some(1));
        assert_eq!(table.vector_for(3), 2);
        assert_eq!(table.vector_for(1), 4);
        assert_eq!(table.vector_for(9), 0, "no vector: the mapping vector");
        table.remove_vp(3, 1);
        assert_eq!(table.vector_for(3), 0);
        assert_eq!(table.vector_for(1), 2);
        table.write(2, None);
        assert_eq!(table.vector_for(1), 4);
    }
}
