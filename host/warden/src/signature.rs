//! Checks, at load time, that a component's `warden:plugin/guest` export has
//! the functions and types of Warden's WIT.
//!
//! The generated bindings would only find a mismatch when the first instance
//! is created; checking the component's type up front refuses the plugin
//! before any guest code runs, and says which function differs and how.

use std::fmt;

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};

use crate::plugin::GUEST_INTERFACE;

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
struct Signature {
    name: &'static str,
    params: &'static [(&'static str, Shape)],
    result: Shape,
}

const GUEST_FUNCTIONS: [Signature; 2] = [
    Signature {
        name: "init",
        params: &[],
        result: Shape::Result(&METADATA, &PLUGIN_ERROR),
    },
    Signature {
        name: "execute",
        params: &[("action", Shape::String), ("input", BYTES)],
        result: Shape::Result(&BYTES, &PLUGIN_ERROR),
    },
];

/// Returns why the component's guest export differs from Warden's WIT, if it does.
pub(crate) fn guest_mismatch(component: &Component, engine: &Engine) -> Option<String> {
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
        if !signature_matches(&func, expected) {
            return Some(format!("`{}` must be `{expected}`", expected.name));
        }
    }
    None
}

fn signature_matches(func: &ComponentFunc, expected: &Signature) -> bool {
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

impl fmt::Display for Signature {
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
