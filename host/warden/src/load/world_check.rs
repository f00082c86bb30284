//! Stage 4: the component exports what its world requires: a plugin's
//! `warden:plugin/guest`, a program's `wasi:cli/run`. A component of another
//! kind is told what it is before anything about its imports.
//!
//! The guest interface's functions and types are checked here too, but
//! [while linking](super::link::plugin), once the imports are resolved: an
//! import Warden cannot provide is the first thing to fix. The generated
//! bindings would find a type mismatch too, but not say which function
//! differs and how.

use std::fmt;

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};

use crate::error::Error;
use crate::plugin::GUEST_INTERFACE;
use crate::program::RUN_INTERFACE;

/// Refuses a plugin whose guest export differs from Warden's WIT, saying how.
pub(crate) fn guest_types(component: &Component, engine: &Engine) -> Result<(), Error> {
    match guest_mismatch(component, engine) {
        Some(mismatch) => Err(Error::invalid_plugin(format!(
            "the `{GUEST_INTERFACE}` export does not match Warden's WIT: {mismatch} \
             (with `metadata` and `plugin-error` as defined in wit/plugin.wit)"
        ))),
        None => Ok(()),
    }
}

/// Refuses a component without `wasi:cli/run`, saying what it is instead.
pub(crate) fn command(component: &Component, engine: &Engine) -> Result<(), Error> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
        .map(|(name, _)| name.to_owned())
        .collect();
    if exports
        .iter()
        .any(|name| name.starts_with("wasi:cli/run@0.2"))
    {
        return Ok(());
    }
    let hint = if exports
        .iter()
        .any(|name| name.starts_with("warden:plugin/guest@"))
    {
        " (it is a Warden plugin; run it with `warden run`)"
    } else {
        ""
    };
    Err(Error::invalid_plugin(format!(
        "the component does not export `{RUN_INTERFACE}`{hint}; it exports {}",
        if exports.is_empty() {
            "nothing".to_owned()
        } else {
            exports.join(", ")
        }
    )))
}

/// Refuses a component without the `warden:plugin/guest` export, naming what
/// it exports instead.
pub(crate) fn plugin(component: &Component, engine: &Engine) -> Result<(), Error> {
    let ty = component.component_type();
    if ty.get_export(engine, GUEST_INTERFACE).is_some() {
        return Ok(());
    }
    let exported: Vec<String> = ty
        .exports(engine)
        .map(|(name, item)| match item.ty {
            ComponentItem::ComponentInstance(_) => name.to_owned(),
            _ => format!("{name} (not an interface)"),
        })
        .collect();
    let hint = if exported
        .iter()
        .any(|name| name.starts_with("wasi:cli/run@"))
    {
        " (it is a wasi:cli command, not a plugin; run it with `warden exec`)"
    } else if exported
        .iter()
        .any(|name| name.starts_with("warden:plugin/guest@"))
    {
        " (it targets another version of Warden's WIT)"
    } else {
        ""
    };
    let exported = if exported.is_empty() {
        "nothing".to_owned()
    } else {
        exported.join(", ")
    };
    Err(Error::invalid_plugin(format!(
        "the component does not export `{GUEST_INTERFACE}`{hint}; it exports {exported}"
    )))
}

/// The subset of component-model types the guest interface uses.
enum Shape {
    U8,
    String,
    List(&'static Shape),
    Record(&'static str, &'static [(&'static str, Shape)]),
    Variant(&'static str, &'static [(&'static str, Shape)]),
    Result(&'static Shape, &'static Shape),
}

const METADATA: Shape = Shape::Record(
    "metadata",
    &[
        ("name", Shape::String),
        ("version", Shape::String),
        ("description", Shape::String),
        ("actions", Shape::List(&Shape::String)),
    ],
);

const PLUGIN_ERROR: Shape = Shape::Variant(
    "plugin-error",
    &[
        ("invalid-input", Shape::String),
        ("unknown-action", Shape::String),
        ("failed", Shape::String),
    ],
);

const BYTES: Shape = Shape::List(&Shape::U8);

/// A function of the guest interface: its name, parameters and result.
struct FunctionType {
    name: &'static str,
    params: &'static [(&'static str, Shape)],
    result: Shape,
}

const GUEST_FUNCTIONS: [FunctionType; 2] = [
    FunctionType {
        name: "init",
        params: &[],
        result: Shape::Result(&METADATA, &PLUGIN_ERROR),
    },
    FunctionType {
        name: "execute",
        params: &[("action", Shape::String), ("input", BYTES)],
        result: Shape::Result(&BYTES, &PLUGIN_ERROR),
    },
];

/// Returns why the component's guest export differs from Warden's WIT, if it does.
fn guest_mismatch(component: &Component, engine: &Engine) -> Option<String> {
    let ty = component.component_type();
    let Some(export) = ty.get_export(engine, GUEST_INTERFACE) else {
        return Some(format!("`{GUEST_INTERFACE}` is not exported"));
    };
    let ComponentItem::ComponentInstance(instance) = export.ty else {
        return Some(format!("`{GUEST_INTERFACE}` is not an interface"));
    };
    for expected in &GUEST_FUNCTIONS {
        let func = match instance
            .get_export(engine, expected.name)
            .map(|item| item.ty)
        {
            Some(ComponentItem::ComponentFunc(func)) => func,
            Some(_) => return Some(format!("`{}` is not a function", expected.name)),
            None => return Some(format!("the function `{}` is missing", expected.name)),
        };
        if !function_matches(&func, expected) {
            return Some(format!("`{}` must be `{expected}`", expected.name));
        }
    }
    None
}

fn function_matches(func: &ComponentFunc, expected: &FunctionType) -> bool {
    let params: Vec<Type> = func.params().map(|(_, ty)| ty).collect();
    let results: Vec<Type> = func.results().collect();
    params.len() == expected.params.len()
        && params
            .iter()
            .zip(expected.params)
            .all(|(ty, (_, shape))| shape.matches(ty))
        && matches!(results.as_slice(), [result] if expected.result.matches(result))
}

impl Shape {
    fn matches(&self, ty: &Type) -> bool {
        match (self, ty) {
            (Shape::U8, Type::U8) | (Shape::String, Type::String) => true,
            (Shape::List(element), Type::List(list)) => element.matches(&list.ty()),
            (Shape::Record(_, fields), Type::Record(record)) => {
                record.fields().len() == fields.len()
                    && record
                        .fields()
                        .zip(fields.iter())
                        .all(|(field, (name, shape))| {
                            field.name == *name && shape.matches(&field.ty)
                        })
            }
            (Shape::Variant(_, cases), Type::Variant(variant)) => {
                variant.cases().len() == cases.len()
                    && variant
                        .cases()
                        .zip(cases.iter())
                        .all(|(case, (name, shape))| {
                            case.name == *name
                                && case.ty.as_ref().is_some_and(|ty| shape.matches(ty))
                        })
            }
            (Shape::Result(ok, err), Type::Result(result)) => {
                result.ok().is_some_and(|ty| ok.matches(&ty))
                    && result.err().is_some_and(|ty| err.matches(&ty))
            }
            _ => false,
        }
    }
}

/// WIT syntax, naming records and variants rather than spelling them out.
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::U8 => f.write_str("u8"),
            Shape::String => f.write_str("string"),
            Shape::List(element) => write!(f, "list<{element}>"),
            Shape::Record(name, _) | Shape::Variant(name, _) => f.write_str(name),
            Shape::Result(ok, err) => write!(f, "result<{ok}, {err}>"),
        }
    }
}

impl fmt::Display for FunctionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "func(")?;
        for (index, (name, shape)) in self.params.iter().enumerate() {
            if index > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{name}: {shape}")?;
        }
        write!(f, ") -> {}", self.result)
    }
}
