//! Which node is the home of each page: the memory ranges of the configuration (the NUMA
//! view), as page ranges.
//!
//! A fixed-capacity table rather than a trait or a closure: the engine needs both "who is
//! the home of page p" and "where is p in my directory slice", and a NIC core wants neither
//! allocation nor dynamic dispatch on the per-packet path. A scan of at most
//! [`MAX_HOME_RANGES`] entries answers both.

use vima::config::{Config, MAX_MEM_RANGES};
use vima::layout::{MAX_NODES, PAGE_SIZE};

use super::{EngineError, LogicalPage, NodeId};

/// Most ranges a [`HomeMap`] holds (as many as a configuration may list).
pub const MAX_HOME_RANGES: usize = MAX_MEM_RANGES;

/// Pages `first .. first + count` have their home at `home`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HomeRange {
    /// First logical page number.
    pub first: u64,
    /// Number of pages (not 0).
    pub count: u64,
    /// Home node.
    pub home: NodeId,
}

impl HomeRange {
    fn end(&self) -> u64 {
        self.first + self.count
    }

    fn contains(&self, page: u64) -> bool {
        page >= self.first && page - self.first < self.count
    }
}

/// The home of every page, as a list of page ranges. Every node's directory holds an entry
/// for every page (indexed by page number), since a range's home can move to any node
/// ([`HomeMap::rehome`]); only the home's entry of a page is live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HomeMap {
    ranges: [HomeRange; MAX_HOME_RANGES],
    len: usize,
}

impl Default for HomeMap {
    fn default() -> Self {
        Self::new()
    }
}

impl HomeMap {
    /// An empty map.
    pub const fn new() -> Self {
        Self {
            ranges: [HomeRange {
                first: 0,
                count: 0,
                home: 0,
            }; MAX_HOME_RANGES],
            len: 0,
        }
    }

    /// The map of a virtual server configuration: one range per memory range.
    pub fn from_config(config: &Config<'_>) -> Result<Self, EngineError> {
        let mut map = Self::new();
        for range in config.mem_ranges() {
            let home = NodeId::try_from(range.node_id).map_err(|_| EngineError::BadHomeRange)?;
            map.add(
                LogicalPage(range.base / PAGE_SIZE),
                range.size / PAGE_SIZE,
                home,
            )?;
        }
        Ok(map)
    }

    /// Adds `count` pages from `first`, homed at `home`.
    pub fn add(&mut self, first: LogicalPage, count: u64, home: NodeId) -> Result<(), EngineError> {
        let range = HomeRange {
            first: first.0,
            count,
            home,
        };
        let fits = count != 0
            && first.0.checked_add(count).is_some()
            && usize::from(home) < MAX_NODES
            && self.len < MAX_HOME_RANGES;
        if !fits
            || self
                .ranges()
                .iter()
                .any(|r| range.first < r.end() && r.first < range.end())
        {
            return Err(EngineError::BadHomeRange);
        }
        self.ranges[self.len] = range;
        self.len += 1;
        Ok(())
    }

    /// The ranges, in the order they were added.
    pub fn ranges(&self) -> &[HomeRange] {
        &self.ranges[..self.len]
    }

    /// The home of `page`, if a range covers it.
    pub fn home_of(&self, page: LogicalPage) -> Option<NodeId> {
        self.ranges()
            .iter()
            .find(|r| r.contains(page.0))
            .map(|r| r.home)
    }

    /// Moves the range that starts at `first` and holds `count` pages to `home`. Only a
    /// whole range moves (a departing node hands over each of its ranges).
    pub fn rehome(
        &mut self,
        first: LogicalPage,
        count: u64,
        home: NodeId,
    ) -> Result<(), EngineError> {
        let range = self.ranges[..self.len]
            .iter_mut()
            .find(|r| r.first == first.0 && r.count == count)
            .ok_or(EngineError::BadHomeRange)?;
        if usize::from(home) >= MAX_NODES {
            return Err(EngineError::BadHomeRange);
        }
        range.home = home;
        Ok(())
    }

    /// The range that starts at `first` and holds `count` pages, if there is one.
    pub fn range(&self, first: LogicalPage, count: u64) -> Option<HomeRange> {
        self.ranges()
            .iter()
            .find(|r| r.first == first.0 && r.count == count)
            .copied()
    }

    /// How many pages `node` is home for.
    pub fn home_page_count(&self, node: NodeId) -> u64 {
        self.ranges()
            .iter()
            .filter(|r| r.home == node)
            .map(|r| r.count)
            .sum()
    }

    /// One past the highest page any range covers: the length the local state table and
    /// the directory need.
    pub fn page_limit(&self) -> u64 {
        self.ranges().iter().map(HomeRange::end).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_and_rehoming() {
        let mut map = HomeMap::new();
        map.add(LogicalPage(0), 10, 0).unwrap();
        map.add(LogicalPage(10), 5, 1).unwrap();
        map.add(LogicalPage(20), 3, 0).unwrap();
        assert_eq!(map.home_of(LogicalPage(9)), Some(0));
        assert_eq!(map.home_of(LogicalPage(10)), Some(1));
        assert_eq!(map.home_of(LogicalPage(15)), None);
        assert_eq!(map.home_of(LogicalPage(22)), Some(0));
        assert_eq!(map.home_page_count(0), 13);
        assert_eq!(map.home_page_count(1), 5);
        assert_eq!(map.page_limit(), 23);
        // A whole range moves; a part of one does not.
        map.rehome(LogicalPage(20), 3, 2).unwrap();
        assert_eq!(map.home_of(LogicalPage(21)), Some(2));
        assert_eq!(map.home_page_count(0), 10);
        assert_eq!(
            map.rehome(LogicalPage(20), 2, 1),
            Err(EngineError::BadHomeRange)
        );
        assert_eq!(
            map.rehome(LogicalPage(0), 10, 16),
            Err(EngineError::BadHomeRange)
        );
        assert_eq!(map.range(LogicalPage(10), 5).map(|r| r.home), Some(1));
    }

    #[test]
    fn bad_ranges_are_refused() {
        let mut map = HomeMap::new();
        map.add(LogicalPage(10), 10, 0).unwrap();
        assert_eq!(
            map.add(LogicalPage(19), 2, 1),
            Err(EngineError::BadHomeRange)
        );
        assert_eq!(
            map.add(LogicalPage(5), 6, 1),
            Err(EngineError::BadHomeRange)
        );
        assert_eq!(
            map.add(LogicalPage(30), 0, 1),
            Err(EngineError::BadHomeRange)
        );
        assert_eq!(
            map.add(LogicalPage(u64::MAX), 2, 1),
            Err(EngineError::BadHomeRange)
        );
        assert_eq!(
            map.add(LogicalPage(30), 1, 16),
            Err(EngineError::BadHomeRange)
        );
        assert_eq!(map.ranges().len(), 1);
        for i in 1..MAX_HOME_RANGES as u64 {
            map.add(LogicalPage(100 + i), 1, 0).unwrap();
        }
        assert_eq!(
            map.add(LogicalPage(1000), 1, 0),
            Err(EngineError::BadHomeRange)
        );
    }

    #[test]
    fn from_config_uses_the_memory_ranges() {
        use vima::config::*;
        let nodes = [
            NodeDesc {
                node_id: 0,
                flags: 0,
            },
            NodeDesc {
                node_id: 1,
                flags: 0,
            },
        ];
        let vps = [VpDesc {
            vp_id: 0,
            node_id: 0,
            ..VpDesc::default()
        }];
        let mem = [
            MemRange {
                base: 0,
                size: 8 << 20,
                node_id: 0,
                flags: 0,
            },
            MemRange {
                base: 8 << 20,
                size: 8 << 20,
                node_id: 1,
                flags: 0,
            },
        ];
        let input = ConfigInput {
            epoch: 0,
            tsc_khz: 1,
            logical_bytes: 16 << 20,
            nodes: &nodes,
            vps: &vps,
            mem_ranges: &mem,
            devices: &[],
            cmdline: b"",
        };
        let mut buf = [0u8; 512];
        let len = encode(&input, &mut buf).unwrap();
        let map = HomeMap::from_config(&Config::parse(&buf[..len]).unwrap()).unwrap();
        assert_eq!(map.home_of(LogicalPage((8 << 20) / 4096 - 1)), Some(0));
        assert_eq!(map.home_of(LogicalPage((8 << 20) / 4096)), Some(1));
        assert_eq!(map.page_limit(), 4096);
        assert_eq!(map.home_page_count(1), 2048);
    }
}
