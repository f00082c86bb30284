//! A text filter for the `example:filters/text-filter` world, which an
//! application defines for itself (`host/warden/examples/text-filter/wit`): a
//! `pipeline` resource configured with replacement rules judges lines,
//! asking the host's dictionary whether a word is banned.
//!
//! The rules are applied naively, as plugin authors do: a rule whose
//! replacement contains its own pattern never finishes, which the host's
//! limits have to stop.

wit_bindgen::generate!({
    path: "../../host/warden/examples/text-filter/wit",
    world: "text-filter",
});

use std::cell::RefCell;

use example::filters::dictionary::is_banned;
use example::filters::types::{Rule, Stats, Verdict};
use exports::example::filters::filter::{Guest, GuestPipeline};

struct TextFilter;

impl Guest for TextFilter {
    type Pipeline = Pipeline;
}

struct Pipeline {
    rules: Vec<Rule>,
    stats: RefCell<Stats>,
}

impl GuestPipeline for Pipeline {
    fn new(rules: Vec<Rule>) -> Self {
        Pipeline {
            rules,
            stats: RefCell::new(Stats {
                kept: 0,
                rewritten: 0,
                dropped: 0,
            }),
        }
    }

    fn judge(&self, line: String) -> Verdict {
        let mut stats = self.stats.borrow_mut();
        let banned = line
            .split(|c: char| !c.is_alphanumeric())
            .filter(|word| !word.is_empty())
            .find(|word| is_banned(&word.to_lowercase()));
        if let Some(word) = banned {
            stats.dropped += 1;
            return Verdict::Drop(format!("banned word `{word}`"));
        }
        let mut text = line.clone();
        for rule in self.rules.iter().filter(|rule| !rule.pattern.is_empty()) {
            // Replace until no occurrence is left.
            while let Some(at) = text.find(&rule.pattern) {
                text.replace_range(at..at + rule.pattern.len(), &rule.replacement);
            }
        }
        if text == line {
            stats.kept += 1;
            Verdict::Keep
        } else {
            stats.rewritten += 1;
            Verdict::Rewrite(text)
        }
    }

    fn stats(&self) -> Stats {
        *self.stats.borrow()
    }
}

export!(TextFilter);
