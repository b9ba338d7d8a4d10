//! The overlay and heatmap PNGs of recent results, under unguessable ids (128 random bits), for
//! `GET /v1/results/{id}/…`. Bounded: the oldest results are dropped once `capacity` are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

pub struct Pictures {
    pub overlay: Vec<u8>,
    pub heatmap: Vec<u8>,
}

pub struct ResultStore {
    capacity: usize,
    inner: Mutex<(HashMap<String, Arc<Pictures>>, VecDeque<String>)>,
}

/// A fresh id: 128 bits from the operating system's generator, in hex.
pub fn new_id() -> crate::Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| crate::Error::InvalidArgument(format!("no random numbers from the operating system: {e}")))?;
    Ok(crate::io::hash::hex(&b))
}

impl ResultStore {
    pub fn new(capacity: usize) -> Self {
        ResultStore { capacity: capacity.max(1), inner: Mutex::new((HashMap::new(), VecDeque::new())) }
    }

    pub fn insert(&self, id: String, p: Pictures) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *g;
        while order.len() >= self.capacity {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        order.push_back(id.clone());
        map.insert(id, Arc::new(p));
    }

    pub fn get(&self, id: &str) -> Option<Arc<Pictures>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0.get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_ids_differ() {
        let s = ResultStore::new(2);
        let pic = |n: u8| Pictures { overlay: vec![n], heatmap: vec![n, n] };
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            s.insert(id.to_string(), pic(i as u8));
        }
        assert!(s.get("a").is_none(), "the oldest is dropped");
        assert_eq!(s.get("c").unwrap().heatmap, vec![2, 2]);
        let (x, y) = (new_id().unwrap(), new_id().unwrap());
        assert_eq!(x.len(), 32);
        assert_ne!(x, y);
    }
}
