"""A Warden plugin in Python, world 0.2: counts vowels, echoes, greets, and
streams.

`warden new NAME --lang python --world 0.2` starts a project from this file;
Warden's tests build it as the Python `hello` for world 0.2 (the same actions
and outputs as the Rust `hello-v2`). Build:
componentize-py -d wit -w streaming-lifecycle-plugin componentize app -o {{name}}.wasm

Actions (`execute`, the whole input):
- `count-vowels`: the number of a, e, i, o, u (either case), as decimal text;
- `echo`: the input, unchanged;
- `greet`: `Hello, NAME!` for the UTF-8 input (`world` when empty); it also
  writes that line to stdout and logs it through `wasi:logging`.

Streaming actions (`execute-stream`):
- `count`: reads the whole input, then writes `lines N vowels M`;
- `upper`: every chunk comes back with ASCII letters in upper case as soon as
  it has been read;
- `echo`: the input, unchanged, chunk by chunk;
- the whole-input actions above, on input collected up to 16 MiB, so that a
  host may stream any action of this plugin.
"""

import componentize_py_async_support
import wit_world
from componentize_py_async_support.futures import FutureReader
from componentize_py_async_support.streams import ByteStreamReader, ByteStreamWriter
from componentize_py_types import Err, Ok, Result
from wit_world import exports
from wit_world.imports import logging
from wit_world.imports.warden_plugin_types import (
    Action,
    Metadata,
    PluginError,
    PluginError_Failed,
    PluginError_InvalidInput,
    PluginError_UnknownAction,
)

VOWELS = set(b"aeiouAEIOU")

# How many bytes one read asks for: small enough that the plugin's memory
# stays flat whatever the input's size.
CHUNK_BYTES = 64 * 1024
# The most input a whole-input action collects when called through `execute-stream`.
WHOLE_INPUT_BYTES = 16 * 1024 * 1024


def action(name: str, description: str, input_type: str, output_type: str) -> Action:
    return Action(
        name=name,
        description=description,
        input_type=input_type,
        output_type=output_type,
    )


class Guest(exports.Guest):
    async def init(self) -> Metadata:
        return Metadata(
            name="{{name}}",
            version="0.1.0",
            description="Counts vowels, echoes its input and greets; streams too",
            actions=[
                action("count-vowels", "Counts the vowels of the input", "text/plain", "text/plain"),
                action("echo", "Returns the input unchanged", "", ""),
                action("greet", "Greets the name given as input", "text/plain", "text/plain"),
                action("count", "Streaming: counts lines and vowels", "text/plain", "text/plain"),
                action("upper", "Streaming: upper-cases ASCII letters as they flow", "text/plain", "text/plain"),
            ],
            # Who wrote the plugin and under which licence (an SPDX expression).
            authors=[],
            license=None,
            homepage=None,
        )

    async def execute(self, action: str, input: bytes) -> bytes:
        if action == "count-vowels":
            return str(count_vowels(input)).encode()
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


class Streaming(exports.Streaming):
    async def execute_stream(
        self, action: str, input: ByteStreamReader
    ) -> tuple[ByteStreamReader, FutureReader[Result[None, PluginError]]]:
        output, output_reader = wit_world.byte_stream()
        # What the host reads if the task ends without writing an outcome.
        outcome, outcome_reader = wit_world.result_unit_warden_plugin_types_plugin_error_future(
            lambda: Err(PluginError_Failed("the plugin stopped early"))
        )
        # The output is returned now and written by a task that outlives this
        # call, so output flows while the input still arrives.
        componentize_py_async_support.spawn(stream(action, input, output, outcome))
        return output_reader, outcome_reader


class Lifecycle(exports.Lifecycle):
    async def shutdown(self) -> None:
        logging.log(logging.Level.INFO, "lifecycle", "shutting down")


async def stream(action: str, input: ByteStreamReader, output: ByteStreamWriter, outcome) -> None:
    """Runs one streaming action, then closes the output and writes the outcome."""
    with input, output:
        if action == "count":
            lines = vowels = 0
            while (chunk := await read_chunk(input)) is not None:
                lines += chunk.count(b"\n")
                vowels += count_vowels(chunk)
            await output.write_all(f"lines {lines} vowels {vowels}".encode())
            result = Ok(None)
        elif action in ("upper", "echo"):
            while (chunk := await read_chunk(input)) is not None:
                if action == "upper":
                    chunk = chunk.upper()
                await output.write_all(chunk)
                if output.reader_dropped:
                    break
            result = Ok(None)
        else:
            # The other actions need their whole input: collect it (up to
            # WHOLE_INPUT_BYTES) and answer as `execute` does.
            whole = bytearray()
            while (chunk := await read_chunk(input)) is not None:
                whole += chunk
                if len(whole) > WHOLE_INPUT_BYTES:
                    break
            if len(whole) > WHOLE_INPUT_BYTES:
                result = Err(PluginError_InvalidInput(f"`{action}` takes at most {WHOLE_INPUT_BYTES} bytes"))
            else:
                try:
                    await output.write_all(await Guest().execute(action, bytes(whole)))
                    result = Ok(None)
                except Err as err:
                    result = err
    await outcome.write(result)


async def read_chunk(input: ByteStreamReader) -> bytes | None:
    """The next chunk of `input`, or `None` once it has ended."""
    while not input.writer_dropped:
        chunk = await input.read(CHUNK_BYTES)
        if chunk:
            return chunk
    return None


def count_vowels(data: bytes) -> int:
    return sum(1 for byte in data if byte in VOWELS)
