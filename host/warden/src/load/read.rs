//! Stage 1: what kind of binary a source holds, told from its header before
//! anything else looks at it.

use crate::error::Error;

/// What a WebAssembly binary is.
pub(crate) enum BinaryKind {
    Component,
    CoreModule,
}

/// Tells components from core modules by their header, and refuses
/// anything else with a message that says what it is instead.
pub(crate) fn binary_kind(bytes: &[u8]) -> Result<BinaryKind, Error> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
    const COMPONENT_LAYER: [u8; 2] = [0x01, 0x00];
    if bytes.len() < 8 || !bytes.starts_with(MAGIC) {
        return Err(Error::invalid_plugin(
            "not a WebAssembly binary (it does not start with the `\\0asm` magic bytes)",
        ));
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Ok(BinaryKind::CoreModule);
    }
    if bytes[6..8] != COMPONENT_LAYER {
        return Err(Error::invalid_plugin(format!(
            "unknown WebAssembly binary version {:02x?}",
            &bytes[4..8]
        )));
    }
    Ok(BinaryKind::Component)
}
