// A Warden plugin in JavaScript: counts vowels, echoes, greets.
//
// `warden new NAME --lang js` starts a project from this file; Warden's
// tests build it as the JavaScript `hello` (the same actions and outputs as
// the Rust one). Build: npm run build (componentize-js).

import { log } from "wasi:logging/logging@0.1.0-draft";

const ACTIONS = ["count-vowels", "echo", "greet"];
const VOWELS = new Set([..."aeiouAEIOU"].map((c) => c.charCodeAt(0)));

export const guest = {
  init() {
    return {
      name: "{{name}}",
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
