// A Warden plugin in C: counts vowels, echoes, greets.
//
// `warden new NAME --lang c` starts a project from this file; Warden's tests
// build it as the C `hello` (the same actions and outputs as the Rust one).
// The bindings (plugin.h, plugin.c, plugin_component_type.o) come from
// wit-bindgen's C generator; clang builds a WASI preview 1 reactor, and
// `warden componentize` wraps it into a component with the preview 1
// reactor adapter. Build: make.
//
// Ownership follows wit-bindgen's C conventions: the arguments of an export
// belong to it (free them or hand them back), and what it returns is freed
// by the bindings after the host has read it, so it must be heap memory.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

static const char *const ACTIONS[] = {"count-vowels", "echo", "greet"};
#define ACTION_COUNT (sizeof(ACTIONS) / sizeof(ACTIONS[0]))

static void fail(exports_warden_plugin_guest_plugin_error_t *err, uint8_t tag,
                 const char *message, size_t len) {
  err->tag = tag;
  plugin_string_dup_n(&err->val.failed, message, len);
}

// Whether `bytes` is well-formed UTF-8 (no overlongs, surrogates or code
// points past U+10FFFF).
static bool is_utf8(const uint8_t *bytes, size_t len) {
  size_t i = 0;
  while (i < len) {
    uint8_t b = bytes[i];
    size_t extra;
    uint32_t min;
    uint32_t cp;
    if (b < 0x80) {
      i += 1;
      continue;
    } else if ((b & 0xE0) == 0xC0) {
      extra = 1, min = 0x80, cp = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
      extra = 2, min = 0x800, cp = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
      extra = 3, min = 0x10000, cp = b & 0x07;
    } else {
      return false;
    }
    if (len - i <= extra) {
      return false;
    }
    for (size_t k = 1; k <= extra; k++) {
      if ((bytes[i + k] & 0xC0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (bytes[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

bool exports_warden_plugin_guest_init(exports_warden_plugin_guest_metadata_t *ret,
                                      exports_warden_plugin_guest_plugin_error_t *err) {
  (void)err;
  plugin_string_dup(&ret->name, "{{name}}");
  plugin_string_dup(&ret->version, "0.1.0");
  plugin_string_dup(&ret->description, "Counts vowels, echoes, greets (C)");
  ret->actions.len = ACTION_COUNT;
  ret->actions.ptr = malloc(ACTION_COUNT * sizeof(plugin_string_t));
  for (size_t i = 0; i < ACTION_COUNT; i++) {
    plugin_string_dup(&ret->actions.ptr[i], ACTIONS[i]);
  }
  return true;
}

static bool is_action(const plugin_string_t *action, const char *name) {
  return action->len == strlen(name) && memcmp(action->ptr, name, action->len) == 0;
}

static void set_text(plugin_list_u8_t *ret, const char *text, size_t len) {
  ret->ptr = malloc(len ? len : 1);
  memcpy(ret->ptr, text, len);
  ret->len = len;
}

bool exports_warden_plugin_guest_execute(plugin_string_t *action, plugin_list_u8_t *input,
                                         plugin_list_u8_t *ret,
                                         exports_warden_plugin_guest_plugin_error_t *err) {
  bool ok = true;
  if (is_action(action, "count-vowels")) {
    size_t count = 0;
    for (size_t i = 0; i < input->len; i++) {
      if (strchr("aeiouAEIOU", input->ptr[i]) != NULL && input->ptr[i] != 0) {
        count++;
      }
    }
    char text[24];
    int len = snprintf(text, sizeof text, "%zu", count);
    set_text(ret, text, (size_t)len);
    plugin_list_u8_free(input);
  } else if (is_action(action, "echo")) {
    // The input becomes the output: its memory now belongs to the result.
    *ret = *input;
  } else if (is_action(action, "greet")) {
    if (!is_utf8(input->ptr, input->len)) {
      const char *why = "the name must be UTF-8";
      fail(err, WARDEN_PLUGIN_TYPES_PLUGIN_ERROR_INVALID_INPUT, why, strlen(why));
      ok = false;
    } else {
      const char *name = input->len ? (const char *)input->ptr : "world";
      int name_len = input->len ? (int)input->len : 5;
      size_t size = (size_t)name_len + sizeof "Hello, !";
      char *greeting = malloc(size);
      int len = snprintf(greeting, size, "Hello, %.*s!", name_len, name);
      printf("%s\n", greeting);
      fflush(stdout);
      plugin_string_t context;
      plugin_string_t message;
      plugin_string_set(&context, "greet");
      char *logged = malloc((size_t)name_len + sizeof "greeted ");
      int logged_len = sprintf(logged, "greeted %.*s", name_len, name);
      plugin_string_dup_n(&message, logged, (size_t)logged_len);
      wasi_logging_logging_log(WASI_LOGGING_LOGGING_LEVEL_INFO, &context, &message);
      plugin_string_free(&message);
      free(logged);
      set_text(ret, greeting, (size_t)len);
      free(greeting);
    }
    plugin_list_u8_free(input);
  } else {
    fail(err, WARDEN_PLUGIN_TYPES_PLUGIN_ERROR_UNKNOWN_ACTION, (const char *)action->ptr,
         action->len);
    plugin_list_u8_free(input);
    ok = false;
  }
  plugin_string_free(action);
  return ok;
}
