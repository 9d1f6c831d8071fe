//! Leases. This module owns the `X` keyspace; grant, revoke, keep-alive and expiry arrive with
//! the lease work. Today it answers whether a lease exists, which Put needs.

use std::sync::Arc;

use crate::mvcc::{LeaseCheck, MvccError};
use crate::storage::{space, Backend};

pub fn lease_key(id: i64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = space::LEASES;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

#[derive(Clone)]
pub struct Leases {
    backend: Arc<dyn Backend>,
}

impl Leases {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }
}

impl LeaseCheck for Leases {
    fn lease_exists(&self, id: i64) -> Result<bool, MvccError> {
        Ok(self.backend.get(&lease_key(id))?.is_some())
    }
}
