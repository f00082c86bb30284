// Warden's hello plugin in JavaScript: counts vowels, echoes, greets.
// Built with componentize-js against Warden's WIT (see the Makefile's
// `guests` target); the same actions and outputs as the Rust `hello`.

import { log } from "wasi:logging/logging@0.1.0-draft";

const ACTIONS = ["count-vowels", "echo", "greet"];
const VOWELS = new Set([..."aeiouAEIOU"].map((c) => c.charCodeAt(0)));

export const guest = {
  init() {
    return {
      name: "hello",
      version: "0.1.0",
      description: "Counts vowels, echoes, greets (JavaScript)",
      actions: ACTIONS,
    };
  },

  execute(action, input) {
    switch (action) {
      case "count-vowels": {
        let count = 0;
        for (const byte of input) {
          if (VOWELS.has(byte)) count += 1;
        }
        return new TextEncoder().encode(String(count));
      }
      case "echo":
        return input;
      case "greet": {
        let name;
        try {
          name = new TextDecoder("utf-8", { fatal: true }).decode(input);
        } catch (err) {
          throw { tag: "invalid-input", val: `the name must be UTF-8: ${err}` };
        }
        name = name || "world";
        const greeting = `Hello, ${name}!`;
        console.log(greeting);
        log("info", "greet", `greeted ${name}`);
        return new TextEncoder().encode(greeting);
      }
      default:
        throw { tag: "unknown-action", val: action };
    }
  },
};
