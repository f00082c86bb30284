//! The denials a call's report lists: requests the host refused because a
//! capability was not granted.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crate::host_memory::{HostMemory, MAX_RECORD_TEXT_BYTES, RECORD_WORDS_BYTES, truncate_text};

/// A request the host refused because a capability was not granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The capability, e.g. `http`.
    pub capability: &'static str,
    /// What was refused, e.g. the URL or the address.
    pub detail: String,
}

impl Denial {
    /// The flag (and manifest key) that grants the capability, as `warden
    /// inspect` lists it; `None` for a capability that is not one of
    /// Warden's own.
    pub fn how_to_grant(&self) -> Option<&'static str> {
        super::CAPABILITIES
            .iter()
            .find(|capability| capability.name == self.capability)
            .map(|capability| capability.how_to_grant)
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} capability: {}", self.capability, self.detail)
    }
}

/// Denials seen during the current call. Shared with callbacks that run
/// outside the store (socket address checks, HTTP hooks).
#[derive(Clone, Debug)]
pub(crate) struct DenialLog {
    denials: Arc<Mutex<Vec<Denial>>>,
    host_memory: HostMemory,
}

/// Denials kept per call; a guest retrying in a loop should not grow the
/// report without bound.
const MAX_DENIALS: usize = 100;

impl DenialLog {
    pub(crate) fn new(host_memory: &HostMemory) -> Self {
        DenialLog {
            denials: Arc::default(),
            host_memory: host_memory.clone(),
        }
    }

    /// Records a denial. The detail usually quotes the guest (a key, a URI),
    /// which the caller cuts with
    /// [`truncate_record_text`](crate::truncate_record_text); whatever a
    /// caller did, the detail is cut to that size plus room for the host's
    /// own words. It is charged to the instance's host-memory budget, and a
    /// denial that does not fit is logged but not kept.
    pub(crate) fn record(&self, capability: &'static str, detail: impl Into<String>) {
        let detail = detail.into();
        let detail =
            truncate_text(&detail, MAX_RECORD_TEXT_BYTES + RECORD_WORDS_BYTES).into_owned();
        tracing::debug!(target: "warden::denied", capability, %detail, "capability denied");
        let mut denials = self.denials.lock().unwrap_or_else(PoisonError::into_inner);
        if denials.len() < MAX_DENIALS && self.host_memory.try_hold_record(detail.len()) {
            denials.push(Denial { capability, detail });
        }
    }

    pub(crate) fn take(&self) -> Vec<Denial> {
        let denials =
            std::mem::take(&mut *self.denials.lock().unwrap_or_else(PoisonError::into_inner));
        self.host_memory
            .release_records(denials.iter().map(|denial| denial.detail.len()).sum());
        denials
    }
}
