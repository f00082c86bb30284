//! What one instance of a component takes from the runtime's shared pools:
//! core instances, linear memories and tables, read from the binary before
//! anything is compiled.
//!
//! A component whose instances would take more than their share could, with
//! a few concurrent calls, leave no slot for any other plugin; such a
//! component is refused at load instead, naming the count and the limit.
//! A memory counts whatever its size: a memory of zero pages takes a pool
//! slot like any other.
//!
//! The counts follow the component's structure: a core module instantiated
//! twice counts twice, and a nested component counts once per instantiation.
//! Modules handed to a nested component as instantiation arguments are not
//! followed; wasmtime counts those at instantiation, against the same limits
//! (see [`StoreLimiter`](crate::limits::StoreLimiter)).

use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentInstance, ComponentOuterAliasKind,
    ComponentTypeRef, Encoding, Instance, Parser, Payload,
};

use crate::error::Error;
use crate::limits::Limits;

/// Core instances, memories and tables one instance of a component creates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Footprint {
    pub core_instances: u32,
    pub memories: u32,
    pub tables: u32,
}

impl Footprint {
    /// Counts what instantiating the component in `bytes` creates.
    pub(crate) fn of_component(bytes: &[u8]) -> Result<Self, Error> {
        let mut stack: Vec<Frame> = Vec::new();
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(|err| {
                Error::invalid_plugin(format!(
                    "the component failed to validate or compile: {err}"
                ))
            })?;
            match payload {
                Payload::Version { encoding, .. } => stack.push(match encoding {
                    Encoding::Module => Frame::Module(Footprint {
                        core_instances: 1,
                        ..Footprint::default()
                    }),
                    Encoding::Component => Frame::Component(ComponentFrame::default()),
                }),
                Payload::MemorySection(section) => {
                    if let Some(Frame::Module(module)) = stack.last_mut() {
                        module.memories = module.memories.saturating_add(section.count());
                    }
                }
                Payload::TableSection(section) => {
                    if let Some(Frame::Module(module)) = stack.last_mut() {
                        module.tables = module.tables.saturating_add(section.count());
                    }
                }
                Payload::End(_) => match (stack.pop(), stack.last_mut()) {
                    (Some(Frame::Module(module)), Some(Frame::Component(parent))) => {
                        parent.modules.push(module);
                    }
                    (Some(Frame::Component(component)), Some(Frame::Component(parent))) => {
                        parent.components.push(component.total);
                    }
                    (Some(Frame::Component(component)), None) => return Ok(component.total),
                    // A module at the top level (or inside one) is not a
                    // component; compilation says so.
                    _ => return Ok(Footprint::default()),
                },
                payload => {
                    if let Some(Frame::Component(_)) = stack.last() {
                        component_payload(&mut stack, payload)?;
                    }
                }
            }
        }
        Ok(Footprint::default())
    }

    /// Refuses a footprint beyond the plugin's limits, naming the count
    /// that is too high.
    pub(crate) fn check(&self, limits: &Limits) -> Result<(), Error> {
        let counts = [
            (
                self.core_instances,
                limits.instances,
                "core instances",
                "instances",
            ),
            (
                self.memories,
                limits.memories,
                "linear memories",
                "memories",
            ),
            (self.tables, limits.tables, "tables", "tables"),
        ];
        for (count, limit, what, key) in counts {
            if count > limit {
                return Err(Error::invalid_plugin(format!(
                    "each instance of this component would create {count} {what}, more than \
                     its limit of {limit} (Limits::{key}, `{key}` in the manifest's limits)"
                )));
            }
        }
        Ok(())
    }

    fn add_times(&mut self, other: Footprint, times: u32) {
        self.core_instances = self
            .core_instances
            .saturating_add(other.core_instances.saturating_mul(times));
        self.memories = self
            .memories
            .saturating_add(other.memories.saturating_mul(times));
        self.tables = self
            .tables
            .saturating_add(other.tables.saturating_mul(times));
    }
}

enum Frame {
    Module(Footprint),
    Component(ComponentFrame),
}

/// A component being read: the footprint of instantiating each entry of
/// its module and component index spaces, and what its own instantiations
/// add up to so far.
#[derive(Default)]
struct ComponentFrame {
    modules: Vec<Footprint>,
    components: Vec<Footprint>,
    total: Footprint,
}

/// Follows one section of the component on top of `stack`: instantiations
/// add to its total; imports, aliases and exports extend its index spaces
/// (with a zero footprint where the binary does not say what they hold).
fn component_payload(stack: &mut [Frame], payload: Payload<'_>) -> Result<(), Error> {
    let parse_error = |err: wasmparser::BinaryReaderError| {
        Error::invalid_plugin(format!(
            "the component failed to validate or compile: {err}"
        ))
    };
    let (outer, current) = stack.split_at_mut(stack.len() - 1);
    let Frame::Component(frame) = &mut current[0] else {
        return Ok(());
    };
    match payload {
        Payload::InstanceSection(section) => {
            for instance in section {
                if let Instance::Instantiate { module_index, .. } = instance.map_err(parse_error)? {
                    let module = lookup(&frame.modules, module_index);
                    frame.total.add_times(module, 1);
                }
            }
        }
        Payload::ComponentInstanceSection(section) => {
            for instance in section {
                if let ComponentInstance::Instantiate {
                    component_index, ..
                } = instance.map_err(parse_error)?
                {
                    let component = lookup(&frame.components, component_index);
                    frame.total.add_times(component, 1);
                }
            }
        }
        Payload::ComponentImportSection(section) => {
            for import in section {
                match import.map_err(parse_error)?.ty {
                    ComponentTypeRef::Module(_) => frame.modules.push(Footprint::default()),
                    ComponentTypeRef::Component(_) => frame.components.push(Footprint::default()),
                    _ => {}
                }
            }
        }
        Payload::ComponentExportSection(section) => {
            for export in section {
                let export = export.map_err(parse_error)?;
                match export.kind {
                    ComponentExternalKind::Module => {
                        frame.modules.push(lookup(&frame.modules, export.index));
                    }
                    ComponentExternalKind::Component => {
                        frame
                            .components
                            .push(lookup(&frame.components, export.index));
                    }
                    _ => {}
                }
            }
        }
        Payload::ComponentAliasSection(section) => {
            for alias in section {
                follow_alias(outer, frame, alias.map_err(parse_error)?);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Extends the index spaces of `frame` (inside the components `outer`) with
/// what `alias` names: what an outer alias points at, or a zero footprint
/// for an export of an instance, whose contents the binary does not say.
fn follow_alias(outer: &[Frame], frame: &mut ComponentFrame, alias: ComponentAlias<'_>) {
    match alias {
        ComponentAlias::InstanceExport { kind, .. } => match kind {
            ComponentExternalKind::Module => frame.modules.push(Footprint::default()),
            ComponentExternalKind::Component => {
                frame.components.push(Footprint::default());
            }
            _ => {}
        },
        ComponentAlias::Outer { kind, count, index } => {
            // `count` 0 is this component itself, 1 its parent, …
            let source = match count {
                0 => Some(&*frame),
                count => match outer.len().checked_sub(count as usize) {
                    Some(depth) => match &outer[depth] {
                        Frame::Component(enclosing) => Some(enclosing),
                        Frame::Module(_) => None,
                    },
                    None => None,
                },
            };
            let footprint = |space: fn(&ComponentFrame) -> &[Footprint]| {
                source.map_or_else(Footprint::default, |source| lookup(space(source), index))
            };
            match kind {
                ComponentOuterAliasKind::CoreModule => {
                    let module = footprint(|frame| &frame.modules);
                    frame.modules.push(module);
                }
                ComponentOuterAliasKind::Component => {
                    let component = footprint(|frame| &frame.components);
                    frame.components.push(component);
                }
                _ => {}
            }
        }
        ComponentAlias::CoreInstanceExport { .. } => {}
    }
}

/// The footprint at `index`, or none for an index the binary gets wrong
/// (validation refuses it later).
fn lookup(footprints: &[Footprint], index: u32) -> Footprint {
    footprints.get(index as usize).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footprint(wat: &str) -> Footprint {
        Footprint::of_component(&wat::parse_str(wat).unwrap()).unwrap()
    }

    #[test]
    fn every_instantiation_counts_and_zero_page_memories_too() {
        let counted = footprint(
            r#"(component
                (core module $two (memory 0) (memory 0) (table 1 funcref))
                (core module $none)
                (core instance (instantiate $two))
                (core instance (instantiate $two))
                (core instance (instantiate $none))
            )"#,
        );
        assert_eq!(
            counted,
            Footprint {
                core_instances: 3,
                memories: 4,
                tables: 2
            }
        );
    }

    #[test]
    fn nested_components_count_once_per_instantiation() {
        let counted = footprint(
            r#"(component
                (core module $m (memory 1))
                (component $inner
                    (core module $n (memory 0))
                    (core instance (instantiate $n))
                    (core instance (instantiate $n))
                )
                (component $outer-alias
                    (alias outer 1 $m (core module $m2))
                    (core instance (instantiate $m2))
                )
                (instance (instantiate $inner))
                (instance (instantiate $inner))
                (instance (instantiate $outer-alias))
                (core instance (instantiate $m))
            )"#,
        );
        assert_eq!(
            counted,
            Footprint {
                core_instances: 6,
                memories: 6,
                tables: 0
            }
        );
    }

    #[test]
    fn a_count_over_its_limit_is_named_with_the_limit() {
        let limits = Limits::default();
        let over = Footprint {
            core_instances: 1,
            memories: limits.memories + 1,
            tables: 0,
        };
        let err = over.check(&limits).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{} linear memories", limits.memories + 1))
                && err.contains(&format!("its limit of {}", limits.memories)),
            "{err}"
        );
        assert!(Footprint::default().check(&limits).is_ok());
    }
}
