//! What a runtime can give each instance: how the pooling allocator is
//! sized for [`RuntimeBuilder::max_instances`](crate::RuntimeBuilder::max_instances),
//! and the [`Capacity`] a plugin's limits are checked against before anything
//! of it is loaded.

use wasmtime::{Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::Error;
use crate::limits::Limits;

/// Elements each pooled table slot holds (the default
/// [`Limits::table_elements`](crate::Limits::table_elements)).
const POOL_TABLE_ELEMENTS: usize = 100_000;

/// Address space the pools may reserve in all. Each memory slot reserves
/// 4 GiB (so that 32-bit memories need no bounds checks) unless that would
/// pass this budget, in which case slots shrink and bounds checks come back.
const POOL_ADDRESS_SPACE: u64 = 16 << 40;

/// The share of the pools one component instance may take. The pools hold
/// `max_instances` such shares, and the runtime never lets more than
/// `max_instances` instances exist, so no plugin can take a slot another
/// plugin's call needs: at worst that call waits for an instance slot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolSlot {
    core_instances: u32,
    memories: u32,
    tables: u32,
}

impl PoolSlot {
    /// The default [`Limits`] counts: every plugin within
    /// them fits, and a plugin may ask for less but not for more.
    const PER_COMPONENT: PoolSlot = PoolSlot {
        core_instances: Limits::DEFAULT_INSTANCES,
        memories: Limits::DEFAULT_MEMORIES,
        tables: Limits::DEFAULT_TABLES,
    };
}

/// How the pooling allocator is sized for a number of instances.
pub(crate) struct PoolSizes {
    instances: u32,
    pub memory_slot_bytes: u64,
}

impl PoolSizes {
    /// Bytes of each freed table that are zeroed in place rather than
    /// returned to the kernel, when the kernel cannot say which pages were
    /// written: a table is small, and keeping it resident saves page faults
    /// on the next instance.
    const TABLE_KEEP_RESIDENT: usize = 64 << 10;
    /// Bytes of each freed linear memory and table that are reset in place
    /// (written pages copied back from the memory image or zeroed) rather
    /// than returned to the kernel, when the kernel reports which pages the
    /// last instance wrote (`PAGEMAP_SCAN`, Linux 6.7 and later). Returning
    /// pages with `madvise` made every next instance fault them back in and
    /// made threads that create instances at once shoot down each other's
    /// TLB entries: with this, an isolated call is about twice as fast and
    /// scales with threads (see docs/performance.md). 1 MiB holds what the
    /// Rust, C, Python and JavaScript hello plugins write in a call (64 MiB
    /// measured no faster), and bounds what an idle slot keeps resident:
    /// 256 MiB for the default 256 slots, however much their last instances
    /// wrote.
    const KEEP_RESIDENT_WITH_PAGEMAP: usize = 1 << 20;
    const CORE_INSTANCES_PER_COMPONENT: u32 = PoolSlot::PER_COMPONENT.core_instances;
    const MEMORIES_PER_COMPONENT: u32 = PoolSlot::PER_COMPONENT.memories;
    const TABLES_PER_COMPONENT: u32 = PoolSlot::PER_COMPONENT.tables;

    pub(crate) fn for_instances(instances: u32, max_memory_bytes: u64) -> Self {
        let memories = u64::from(instances) * u64::from(Self::MEMORIES_PER_COMPONENT);
        let budget_per_slot = (POOL_ADDRESS_SPACE / memories.max(1)) & !0xffff;
        PoolSizes {
            instances,
            memory_slot_bytes: max_memory_bytes.min(4 << 30).min(budget_per_slot),
        }
    }

    pub(crate) fn configure(&self, config: &mut Config) {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(self.instances)
            .total_core_instances(
                self.instances
                    .saturating_mul(Self::CORE_INSTANCES_PER_COMPONENT),
            )
            .total_memories(self.instances.saturating_mul(Self::MEMORIES_PER_COMPONENT))
            .total_tables(self.instances.saturating_mul(Self::TABLES_PER_COMPONENT))
            .total_stacks(self.instances)
            // Wasmtime's own check of the same per-component shares, when a
            // component is compiled or deserialized: the pools hold whatever
            // Warden's load-time count of a component missed.
            .max_core_instances_per_component(Self::CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(Self::MEMORIES_PER_COMPONENT)
            .max_tables_per_component(Self::TABLES_PER_COMPONENT)
            .max_memories_per_module(Self::MEMORIES_PER_COMPONENT)
            .max_tables_per_module(Self::TABLES_PER_COMPONENT)
            .table_elements(POOL_TABLE_ELEMENTS)
            .max_memory_size(self.memory_slot_bytes as usize);
        // Without `PAGEMAP_SCAN`, keeping memory resident means resetting
        // every kept byte, written or not, which measured slower than
        // letting the kernel fault pages back in.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(Enabled::Yes)
                .linear_memory_keep_resident(Self::KEEP_RESIDENT_WITH_PAGEMAP)
                .table_keep_resident(Self::KEEP_RESIDENT_WITH_PAGEMAP);
        } else {
            pool.table_keep_resident(Self::TABLE_KEEP_RESIDENT);
        }
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_reservation(self.memory_slot_bytes);
    }
}

/// What a runtime can honour of a plugin's [`Limits`]: fuel only when it
/// meters fuel, memories and tables no larger than its slots, and, with
/// pooling, no more than one instance's share of the pools.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Capacity {
    pub fuel_metering: bool,
    pub max_memory_bytes: u64,
    pub max_table_elements: u64,
    /// What each pooled instance slot holds, when pooling is on.
    pub pool_slot: Option<PoolSlot>,
}

impl Capacity {
    /// The capacity of a runtime built with `pooling` (or without), its
    /// memory slots `max_memory_bytes` large.
    pub(crate) fn new(fuel_metering: bool, pooling: bool, max_memory_bytes: u64) -> Self {
        Capacity {
            fuel_metering,
            max_memory_bytes,
            max_table_elements: if pooling {
                POOL_TABLE_ELEMENTS as u64
            } else {
                u64::MAX
            },
            pool_slot: pooling.then_some(PoolSlot::PER_COMPONENT),
        }
    }

    /// Refuses limits this runtime cannot honour.
    pub(crate) fn check(&self, limits: &Limits) -> Result<(), Error> {
        if limits.fuel.is_some() && !self.fuel_metering {
            return Err(Error::InvalidConfig(
                "a fuel limit needs a runtime built with fuel metering (RuntimeBuilder::fuel)"
                    .into(),
            ));
        }
        if limits.memory_bytes > self.max_memory_bytes {
            return Err(Error::InvalidConfig(format!(
                "the memory limit ({}) is above the most this runtime gives an instance ({}); \
                 set --memory (or `memory` under the manifest's [limits]) to {} or less \
                 (an embedder raises the most with RuntimeBuilder::max_memory_bytes)",
                crate::units::format_bytes(limits.memory_bytes),
                crate::units::format_bytes(self.max_memory_bytes),
                crate::units::format_bytes(self.max_memory_bytes).replace(' ', "")
            )));
        }
        if limits.table_elements > self.max_table_elements {
            return Err(Error::InvalidConfig(format!(
                "the plugin's table limit ({} elements) is larger than this runtime's table slots ({} elements)",
                limits.table_elements, self.max_table_elements
            )));
        }
        if let Some(slot) = self.pool_slot {
            let counts = [
                (
                    limits.instances,
                    slot.core_instances,
                    "instances",
                    "core instances",
                ),
                (limits.memories, slot.memories, "memories", "memories"),
                (limits.tables, slot.tables, "tables", "tables"),
            ];
            for (limit, share, field, what) in counts {
                if limit > share {
                    return Err(Error::InvalidConfig(format!(
                        "the plugin's `{field}` limit ({limit}) is more than the {share} {what} each \
                         instance may take from this runtime's pools; lower it, or build the \
                         runtime without pooling (RuntimeBuilder::pooling(false))"
                    )));
                }
            }
        }
        Ok(())
    }
}
