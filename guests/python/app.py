"""A Warden plugin in Python: counts vowels, echoes, greets.

`warden new NAME --lang python` starts a project from this file; Warden's
tests build it as the Python `hello` (the same actions and outputs as the
Rust one). Build: componentize-py -d wit -w plugin componentize app -o {{name}}.wasm
"""

from wit_world import exports
from wit_world.imports import logging
from wit_world.imports.warden_plugin_types import (
    Metadata,
    PluginError_InvalidInput,
    PluginError_UnknownAction,
)
from componentize_py_types import Err

ACTIONS = ["count-vowels", "echo", "greet"]
VOWELS = set(b"aeiouAEIOU")


class Guest(exports.Guest):
    def init(self) -> Metadata:
        return Metadata(
            name="{{name}}",
            version="0.1.0",
            description="Counts vowels, echoes, greets (Python)",
            actions=ACTIONS,
        )

    def execute(self, action: str, input: bytes) -> bytes:
        if action == "count-vowels":
            return str(sum(1 for byte in input if byte in VOWELS)).encode()
        if action == "echo":
            return bytes(input)
        if action == "greet":
            try:
                name = bytes(input).decode("utf-8")
            except UnicodeDecodeError as err:
                raise Err(PluginError_InvalidInput(f"the name must be UTF-8: {err}"))
            name = name or "world"
            greeting = f"Hello, {name}!"
            print(greeting)
            logging.log(logging.Level.INFO, "greet", f"greeted {name}")
            return greeting.encode()
        raise Err(PluginError_UnknownAction(action))
