//! The host-memory budget of one instance ([`Limits::host_memory_bytes`]):
//! what the host holds on a guest's behalf outside its linear memory, which
//! the guest's memory limit does not see.
//!
//! Three kinds of holdings count against it:
//!
//! - records of the current call (log records and denials), charged when
//!   they are kept and released when the call's report takes them; a record
//!   that does not fit is dropped and counted, like one past the log limits;
//! - directory listings (`read-directory` streams), charged when listed and
//!   released when the guest drops the stream; a listing that does not fit
//!   is refused;
//! - what the guest builds through `wasi:http` and keeps in its resource
//!   table (header maps, requests, responses, and the bytes written to an
//!   outgoing body whose request or response is not yet sent). Every `wasi:http` call passes
//!   through [`HostMemory::before_http_call`], which knows the most one call
//!   can add ([`MAX_HTTP_CALL_GROWTH`]) and measures the table again only
//!   when the calls since the last measurement could have used up the room
//!   left, so measuring costs little until the guest nears its budget. When
//!   the room left is smaller than one call's growth, the host refuses every
//!   header from then on and records the refusal, so that a guest which
//!   fails because of it fails with `memory-limit` (host memory).
//!
//! Guest-supplied text in records is cut to [`MAX_RECORD_TEXT_BYTES`] by
//! [`truncate_record_text`] before it is kept or formatted.

use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::FieldMap;
use wasmtime_wasi_http::p2::types::{
    HostIncomingResponse, HostOutgoingRequest, HostOutgoingResponse,
};

use crate::capabilities::http::OUTGOING_BODY_BUFFER_BYTES;
use crate::limits::{LimitRefusal, LimitedResource, Limits};

/// Longest piece of guest-supplied text (a config key, a bucket name, a URI,
/// an error message) kept in any record the host makes of a call: denials,
/// errors and access-log lines. Longer text is cut there, with a note of its
/// full length. 1 KiB: enough for any name a person needs to read, while a
/// hundred denials stay within 100 KiB.
pub const MAX_RECORD_TEXT_BYTES: usize = 1 << 10;

/// Cuts guest-supplied text to at most [`MAX_RECORD_TEXT_BYTES`] (on a
/// character boundary) and says how long it was, for any record of what a
/// guest did: a denial, an error message, an access-log line.
///
/// ```
/// let key = "k".repeat(5000);
/// let kept = warden::truncate_record_text(&key);
/// assert!(kept.len() < 1100);
/// assert!(kept.ends_with("… (5000 bytes in all)"));
/// assert_eq!(warden::truncate_record_text("short"), "short");
/// ```
pub fn truncate_record_text(text: &str) -> Cow<'_, str> {
    truncate_text(text, MAX_RECORD_TEXT_BYTES)
}

/// Room in a record for the host's own words around the guest text it
/// quotes (e.g. "reading `…`" around a config key).
pub(crate) const RECORD_WORDS_BYTES: usize = 256;

/// Cuts `text` to at most `max` bytes on a character boundary, noting its
/// full length.
pub(crate) fn truncate_text(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes in all)", &text[..end], text.len()))
}

/// The most host memory one `wasi:http` call can add to what the guest
/// holds: one header map at wasmtime-wasi-http's size limit (128 KiB), or
/// one URI part at the `http` crate's length limit (64 KiB), or one new
/// outgoing body at the most it can hold (128 KiB), with room for their
/// bookkeeping.
pub(crate) const MAX_HTTP_CALL_GROWTH: u64 = 256 << 10;

// A new outgoing body is one call's growth, written to later.
const _: () = assert!(OUTGOING_BODY_BUFFER_BYTES as u64 <= MAX_HTTP_CALL_GROWTH);

/// The largest header map a guest may build while its budget has room:
/// wasmtime-wasi-http's own default.
const MAX_FIELDS_BYTES: usize = 128 << 10;

/// One instance's budget. Cloning shares it: the capabilities that keep
/// records (some of them outside the store, like socket address checks)
/// hold a clone.
#[derive(Clone, Debug)]
pub(crate) struct HostMemory {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    limit: u64,
    /// Bytes of the current call's records.
    records: AtomicU64,
    /// Bytes of the directory listings the guest holds.
    listings: AtomicU64,
    /// Bytes of resources at the last measurement, plus the most that
    /// `wasi:http` calls since then can have added.
    resources: AtomicU64,
    /// Bytes of resources the last measurement found.
    measured: AtomicU64,
}

/// What the next `wasi:http` call may build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HttpAllowance {
    /// The size limit of any header map the call creates.
    pub field_bytes: usize,
    /// Set when the budget has no room for one more call's growth: every
    /// header is then refused, and this is the refusal to record.
    pub refusal: Option<LimitRefusal>,
}

impl HostMemory {
    pub(crate) fn new(limits: &Limits) -> Self {
        HostMemory {
            shared: Arc::new(Shared {
                limit: limits.host_memory_bytes,
                records: AtomicU64::new(0),
                listings: AtomicU64::new(0),
                resources: AtomicU64::new(0),
                measured: AtomicU64::new(0),
            }),
        }
    }

    /// Charges `bytes` of a record the current call keeps, if they fit
    /// beside the listings and the resources last measured.
    pub(crate) fn try_hold_record(&self, bytes: usize) -> bool {
        let bytes = bytes as u64;
        let others = self.shared.listings.load(Ordering::Relaxed)
            + self.shared.measured.load(Ordering::Relaxed);
        self.shared
            .records
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |records| {
                let total = records.saturating_add(bytes).saturating_add(others);
                (total <= self.shared.limit).then_some(records + bytes)
            })
            .is_ok()
    }

    /// What the budget has room for now, by the last measurement.
    pub(crate) fn room(&self) -> u64 {
        self.shared
            .limit
            .saturating_sub(self.held_by_last_measure())
    }

    fn held_by_last_measure(&self) -> u64 {
        let shared = &self.shared;
        shared.records.load(Ordering::Relaxed)
            + shared.listings.load(Ordering::Relaxed)
            + shared.measured.load(Ordering::Relaxed)
    }

    /// The refusal of `bytes` more, which do not fit.
    pub(crate) fn refusal(&self, bytes: u64) -> LimitRefusal {
        LimitRefusal {
            resource: LimitedResource::HostMemory,
            requested: Some(self.held_by_last_measure().saturating_add(bytes)),
            limit: self.shared.limit,
        }
    }

    /// Charges a directory listing of `bytes`, or refuses it.
    pub(crate) fn hold_listing(&self, bytes: usize) -> Result<(), LimitRefusal> {
        let bytes = bytes as u64;
        if bytes > self.room() {
            return Err(self.refusal(bytes));
        }
        self.shared.listings.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back a listing's `bytes` when the guest drops it.
    pub(crate) fn release_listing(&self, bytes: usize) {
        release(&self.shared.listings, bytes);
    }

    /// Gives back `bytes` of records that the call's report has taken.
    pub(crate) fn release_records(&self, bytes: usize) {
        release(&self.shared.records, bytes);
    }

    /// Decides what the `wasi:http` call about to run may build, measuring
    /// the resources in `table` again when the estimate no longer leaves
    /// room for the call.
    pub(crate) fn before_http_call(&self, table: &mut ResourceTable) -> HttpAllowance {
        let shared = &self.shared;
        let others =
            shared.records.load(Ordering::Relaxed) + shared.listings.load(Ordering::Relaxed);
        let mut resources = shared.resources.load(Ordering::Relaxed);
        if others + resources + MAX_HTTP_CALL_GROWTH > shared.limit {
            resources = table_bytes(table);
            shared.measured.store(resources, Ordering::Relaxed);
        }
        let held = others + resources;
        let room = shared.limit.saturating_sub(held);
        shared
            .resources
            .store(resources + MAX_HTTP_CALL_GROWTH, Ordering::Relaxed);
        if room < MAX_HTTP_CALL_GROWTH {
            return HttpAllowance {
                field_bytes: usize::try_from(room).unwrap_or(0),
                refusal: Some(LimitRefusal {
                    resource: LimitedResource::HostMemory,
                    requested: Some(held + MAX_HTTP_CALL_GROWTH),
                    limit: shared.limit,
                }),
            };
        }
        HttpAllowance {
            field_bytes: MAX_FIELDS_BYTES,
            refusal: None,
        }
    }
}

/// Takes `bytes` off a holding; saturating, though every release matches an
/// earlier charge.
fn release(holding: &AtomicU64, bytes: usize) {
    let bytes = bytes as u64;
    // The update always answers, so it cannot fail.
    let _ = holding.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
        Some(held.saturating_sub(bytes))
    });
}

/// The bytes of what the guest built through `wasi:http` and still holds.
/// A header map shared by several handles counts once per handle: an
/// overestimate, never an underestimate.
fn table_bytes(table: &mut ResourceTable) -> u64 {
    table
        .iter_mut()
        .map(|entry| resource_bytes(entry))
        .sum::<usize>() as u64
}

fn resource_bytes(entry: &(dyn Any + Send)) -> usize {
    if let Some(fields) = entry.downcast_ref::<FieldMap>() {
        return header_bytes(fields);
    }
    if let Some(request) = entry.downcast_ref::<HostOutgoingRequest>() {
        return header_bytes(&request.headers)
            + request.authority.as_ref().map_or(0, String::len)
            + request.path_with_query.as_ref().map_or(0, String::len)
            + body_bytes(request.body.is_some());
    }
    if let Some(response) = entry.downcast_ref::<HostOutgoingResponse>() {
        return header_bytes(&response.headers) + body_bytes(response.body.is_some());
    }
    if let Some(response) = entry.downcast_ref::<HostIncomingResponse>() {
        return header_bytes(&response.headers);
    }
    0
}

/// What an outgoing body not yet sent may hold: whatever the guest wrote to
/// it, up to [`OUTGOING_BODY_BUFFER_BYTES`], stays with its request or
/// response until that is sent or dropped.
fn body_bytes(has_body: bool) -> usize {
    if has_body {
        OUTGOING_BODY_BUFFER_BYTES
    } else {
        0
    }
}

/// A header map's size as wasmtime-wasi-http counts it against its own
/// limit: names and values with their in-memory representation.
fn header_bytes(map: &HeaderMap) -> usize {
    let names: usize = map
        .keys()
        .map(|name| name.as_str().len() + size_of::<HeaderName>())
        .sum();
    let values: usize = map
        .values()
        .map(|value| value.len() + size_of::<HeaderValue>())
        .sum();
    names + values
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: u64) -> HostMemory {
        HostMemory::new(&Limits {
            host_memory_bytes: bytes,
            ..Limits::default()
        })
    }

    #[test]
    fn records_are_held_within_the_budget_and_released() {
        let memory = budget(1000);
        assert!(memory.try_hold_record(600));
        assert!(!memory.try_hold_record(500), "600 + 500 > 1000");
        assert!(memory.try_hold_record(400));
        memory.release_records(1000);
        assert!(memory.try_hold_record(1000));
    }

    #[test]
    fn header_maps_are_measured_and_refused_past_the_budget() {
        let memory = budget(4 * MAX_HTTP_CALL_GROWTH);
        let mut table = ResourceTable::new();
        let mut kept = 0;
        let refusal = loop {
            let allowance = memory.before_http_call(&mut table);
            if let Some(refusal) = allowance.refusal {
                break refusal;
            }
            let mut map = HeaderMap::new();
            let value = HeaderValue::from_bytes(&vec![b'v'; 100 << 10]).unwrap();
            map.insert("x-bulk", value);
            let map = FieldMap::new_immutable(wasmtime_wasi_http::default_hooks(), map);
            table.push(map).unwrap();
            kept += 1;
            assert!(kept < 100, "the budget never refused");
        };
        assert_eq!(refusal.resource, LimitedResource::HostMemory);
        assert_eq!(refusal.limit, 4 * MAX_HTTP_CALL_GROWTH);
        let held = table_bytes(&mut table);
        assert!(
            held <= 4 * MAX_HTTP_CALL_GROWTH,
            "{kept} maps hold {held} bytes"
        );
        assert!(
            kept >= 5,
            "maps of 100 KiB fit until the budget is near: {kept}"
        );
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_RECORD_TEXT_BYTES);
        let kept = truncate_record_text(&text);
        assert!(kept.len() <= MAX_RECORD_TEXT_BYTES + 40);
        assert!(kept.ends_with(&format!("… ({} bytes in all)", text.len())));
    }
}
