//! The app's languages: every sentence a person reads goes through [Fluent](https://projectfluent.org)
//! messages kept in `app/i18n/<lang>/pinhole.ftl` and built into the binary.
//!
//! The language is process-wide. It is English until the desktop app calls
//! [`use_system_language`] when it starts: `PINHOLE_LANG` (e.g. `de`) forces one, else the
//! system locale decides (`LANGUAGE`, `LC_ALL`, `LC_MESSAGES`, `LANG` in that order, as gettext
//! reads them; the platform's own setting where none is set), and anything we have no
//! translation for is English. Tests and callers can force one with [`set_language`].
//!
//! A message missing from a translation is taken from English, never shown as its id. Fluent's
//! bidi isolation marks around placeables are off: egui draws them as boxes.
//!
//! ```
//! use pinhole::ui::i18n::{self, Language};
//! assert_eq!(i18n::tr_in(Language::German, "settings", &[]), "Einstellungen");
//! assert_eq!(
//!     i18n::tr_in(Language::English, "peer-hung-up", &[("peer", &"bob")]),
//!     "bob hung up."
//! );
//! ```
//!
//! Not translated, on purpose: log lines, the CLI's output, JSON reports, and words that are
//! stored as data (the recent calls' outcomes in `contacts.toml`).

use std::fmt::Display;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use unic_langid::LanguageIdentifier;

/// A language the app speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    /// English, the source language: every message is there.
    English,
    /// German.
    German,
}

impl Language {
    /// Every language, English first.
    pub const ALL: [Language; 2] = [Language::English, Language::German];

    /// The language's tag ("en", "de").
    pub fn tag(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::German => "de",
        }
    }

    /// The language of a locale or language tag such as `de`, `de_DE.UTF-8`, `de-AT` or
    /// `en_GB`; `None` for one the app has no translation for (and for `C`, `POSIX`).
    pub fn from_locale(locale: &str) -> Option<Language> {
        // "de_DE.UTF-8@euro" -> "de"
        let lang = locale
            .trim()
            .split(['_', '-', '.', '@'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match lang.as_str() {
            "en" => Some(Language::English),
            "de" => Some(Language::German),
            _ => None,
        }
    }

    /// The messages in this language.
    fn source(self) -> &'static str {
        match self {
            Language::English => include_str!("../../i18n/en/pinhole.ftl"),
            Language::German => include_str!("../../i18n/de/pinhole.ftl"),
        }
    }

    fn index(self) -> u8 {
        match self {
            Language::English => 0,
            Language::German => 1,
        }
    }
}

/// The current language, as [`Language::index`].
static CURRENT: AtomicU8 = AtomicU8::new(0);

/// Makes `language` the app's language from the next frame on.
pub fn set_language(language: Language) {
    CURRENT.store(language.index(), Ordering::Relaxed);
}

/// The app's language.
pub fn language() -> Language {
    match CURRENT.load(Ordering::Relaxed) {
        1 => Language::German,
        _ => Language::English,
    }
}

/// Sets the language from `PINHOLE_LANG` or the system locale (see the module docs) and
/// returns it.
pub fn use_system_language() -> Language {
    let var = |name: &str| std::env::var(name).ok();
    let language = choose(var("PINHOLE_LANG").as_deref(), &system_locales(var));
    set_language(language);
    language
}

/// The locales a person asked for, first choice first: gettext's `LANGUAGE` list (only when
/// a locale is set at all, as gettext does), then the first of `LC_ALL`, `LC_MESSAGES`,
/// `LANG`; the platform's setting when none of them is set.
fn system_locales(var: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let locale = set("LC_ALL")
        .or_else(|| set("LC_MESSAGES"))
        .or_else(|| set("LANG"));
    let mut locales = Vec::new();
    if let Some(locale) = locale {
        let c = matches!(locale.split('.').next().unwrap_or_default(), "C" | "POSIX");
        if !c && let Some(list) = set("LANGUAGE") {
            locales.extend(list.split(':').map(str::to_owned));
        }
        locales.push(locale);
    } else if let Some(locale) = sys_locale::get_locale() {
        locales.push(locale);
    }
    locales
}

/// The language for `forced` (`PINHOLE_LANG`) and the asked-for `locales`: the first one the
/// app speaks, else English.
fn choose(forced: Option<&str>, locales: &[String]) -> Language {
    forced
        .into_iter()
        .chain(locales.iter().map(String::as_str))
        .find_map(Language::from_locale)
        .unwrap_or(Language::English)
}

/// The message `id` in the app's language.
pub fn t(id: &str) -> String {
    tr_in(language(), id, &[])
}

/// The message `id` in the app's language, with its arguments (`$name` in the message).
pub fn tr(id: &str, args: &[(&str, &dyn Display)]) -> String {
    tr_in(language(), id, args)
}

/// The message `id` in `language`; English where the translation lacks it, the id itself only
/// where English lacks it too (a test makes sure none does).
pub fn tr_in(language: Language, id: &str, args: &[(&str, &dyn Display)]) -> String {
    let args = (!args.is_empty()).then(|| {
        let mut fluent = FluentArgs::with_capacity(args.len());
        for (name, value) in args {
            fluent.set(*name, FluentValue::from(value.to_string()));
        }
        fluent
    });
    [language, Language::English]
        .into_iter()
        .find_map(|language| format(language, id, args.as_ref()).map(|(text, _)| text))
        .unwrap_or_else(|| id.to_owned())
}

/// `id` formatted in `language` with the errors Fluent met; `None` when the language has no
/// such message.
fn format(
    language: Language,
    id: &str,
    args: Option<&FluentArgs>,
) -> Option<(String, Vec<fluent_bundle::FluentError>)> {
    let bundle = bundle(language)?;
    let pattern = bundle.get_message(id)?.value()?;
    let mut errors = Vec::new();
    let text = bundle.format_pattern(pattern, args, &mut errors);
    Some((text.into_owned(), errors))
}

/// The bundle of `language`, made on first use; `None` if its file does not parse (a test
/// makes sure both do).
fn bundle(language: Language) -> Option<&'static FluentBundle<FluentResource>> {
    static BUNDLES: [OnceLock<Option<FluentBundle<FluentResource>>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    BUNDLES[usize::from(language.index())]
        .get_or_init(|| {
            let resource = FluentResource::try_new(language.source().to_owned()).ok()?;
            let tag: LanguageIdentifier = language.tag().parse().ok()?;
            let mut bundle = FluentBundle::new_concurrent(vec![tag]);
            bundle.set_use_isolating(false);
            bundle.add_resource(resource).ok()?;
            Some(bundle)
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use fluent_syntax::ast;

    use super::*;

    /// The ids of the messages in `language`'s file, and their variables.
    fn messages(language: Language) -> Vec<(String, BTreeSet<String>)> {
        let resource = fluent_syntax::parser::parse(language.source())
            .unwrap_or_else(|(_, errors)| panic!("{language:?}: {errors:?}"));
        resource
            .body
            .iter()
            .filter_map(|entry| match entry {
                ast::Entry::Message(m) => {
                    let mut vars = BTreeSet::new();
                    if let Some(value) = &m.value {
                        variables(value, &mut vars);
                    }
                    // A server goes as `server` and, for the start of a sentence, as
                    // `subject` too: a language may use either.
                    let vars = vars
                        .into_iter()
                        .map(|v| if v == "subject" { "server".into() } else { v })
                        .collect();
                    Some((m.id.name.to_owned(), vars))
                }
                _ => None,
            })
            .collect()
    }

    fn variables(pattern: &ast::Pattern<&str>, out: &mut BTreeSet<String>) {
        for element in &pattern.elements {
            if let ast::PatternElement::Placeable { expression } = element {
                expression_variables(expression, out);
            }
        }
    }

    fn expression_variables(expression: &ast::Expression<&str>, out: &mut BTreeSet<String>) {
        match expression {
            ast::Expression::Inline(inline) => inline_variables(inline, out),
            ast::Expression::Select { selector, variants } => {
                inline_variables(selector, out);
                for variant in variants {
                    variables(&variant.value, out);
                }
            }
        }
    }

    fn inline_variables(inline: &ast::InlineExpression<&str>, out: &mut BTreeSet<String>) {
        match inline {
            ast::InlineExpression::VariableReference { id } => {
                out.insert(id.name.to_owned());
            }
            ast::InlineExpression::Placeable { expression } => {
                expression_variables(expression, out);
            }
            _ => {}
        }
    }

    #[test]
    fn every_language_has_the_same_messages_with_the_same_arguments() {
        let en = messages(Language::English);
        assert!(en.len() > 100, "only {} messages", en.len());
        let ids = |m: &[(String, BTreeSet<String>)]| {
            m.iter().map(|(id, _)| id.clone()).collect::<BTreeSet<_>>()
        };
        assert_eq!(ids(&en).len(), en.len(), "an id twice in en");
        for language in &Language::ALL[1..] {
            let other = messages(*language);
            assert_eq!(
                ids(&other).len(),
                other.len(),
                "an id twice in {language:?}"
            );
            let missing: Vec<_> = ids(&en).difference(&ids(&other)).cloned().collect();
            let extra: Vec<_> = ids(&other).difference(&ids(&en)).cloned().collect();
            assert!(missing.is_empty(), "missing in {language:?}: {missing:?}");
            assert!(extra.is_empty(), "only in {language:?}: {extra:?}");
            for (id, vars) in &en {
                let theirs = other.iter().find(|(o, _)| o == id).map(|(_, v)| v);
                assert_eq!(Some(vars), theirs, "{id}: other arguments in {language:?}");
            }
        }
    }

    #[test]
    fn every_message_formats_without_errors_in_both_languages() {
        for language in Language::ALL {
            for (id, vars) in messages(language) {
                let mut args = FluentArgs::new();
                args.set("subject", FluentValue::from("x"));
                for var in &vars {
                    args.set(var.as_str(), FluentValue::from("x"));
                }
                let (text, errors) = format(language, &id, Some(&args))
                    .unwrap_or_else(|| panic!("{language:?}: {id} has no value"));
                assert!(errors.is_empty(), "{language:?} {id}: {errors:?}");
                assert!(!text.trim().is_empty(), "{language:?} {id} is empty");
                assert!(
                    !text.contains(['\u{2068}', '\u{2069}']),
                    "{language:?} {id}: isolation marks"
                );
            }
        }
    }

    /// Every `"message-id"` that a module of the UI passes to [`t`], [`tr`] or [`tr_in`]
    /// exists in English (and so, by the test above, in German).
    #[test]
    fn every_id_used_in_code_exists() {
        let ids: BTreeSet<String> = messages(Language::English)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let sources = [
            ("words.rs", include_str!("words.rs")),
            ("alerts.rs", include_str!("alerts.rs")),
            ("call_view.rs", include_str!("call_view.rs")),
            ("incoming_view.rs", include_str!("incoming_view.rs")),
            ("invite_view.rs", include_str!("invite_view.rs")),
            ("main_view.rs", include_str!("main_view.rs")),
            ("settings_view.rs", include_str!("settings_view.rs")),
            ("setup_view.rs", include_str!("setup_view.rs")),
            ("widgets.rs", include_str!("widgets.rs")),
            ("keys.rs", include_str!("keys.rs")),
            ("notify.rs", include_str!("notify.rs")),
            ("tray.rs", include_str!("tray.rs")),
        ];
        let mut used = 0;
        for (file, source) in sources {
            for call in ["t(\"", "tr(\"", "tr_in(Language::German, \""] {
                for (at, _) in source.match_indices(call) {
                    // Only calls, not e.g. `format!("...t("`: the char before is not a letter.
                    let before = source[..at].chars().next_back();
                    if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        continue;
                    }
                    let rest = &source[at + call.len()..];
                    let id = rest.split('"').next().unwrap_or_default();
                    assert!(ids.contains(id), "{file}: no message {id:?}");
                    used += 1;
                }
            }
        }
        assert!(used > 100, "only {used} uses found");
    }

    #[test]
    fn a_missing_translation_is_english_and_a_missing_message_its_id() {
        assert_eq!(tr_in(Language::German, "settings", &[]), "Einstellungen");
        assert_eq!(tr_in(Language::English, "settings", &[]), "Settings");
        assert_eq!(
            tr_in(Language::German, "no-such-message", &[]),
            "no-such-message"
        );
    }

    #[test]
    fn arguments_have_no_isolation_marks() {
        let text = tr_in(Language::German, "peer-hung-up", &[("peer", &"bob")]);
        assert_eq!(text, "bob hat aufgelegt.");
    }

    #[test]
    fn the_language_comes_from_the_locale() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let pick = |forced, pairs| choose(forced, &system_locales(env(pairs)));
        assert_eq!(pick(None, &[("LANG", "de_DE.UTF-8")]), Language::German);
        assert_eq!(pick(None, &[("LANG", "C.UTF-8")]), Language::English);
        assert_eq!(pick(None, &[("LANG", "fr_FR.UTF-8")]), Language::English);
        assert_eq!(pick(Some("de"), &[("LANG", "C")]), Language::German);
        assert_eq!(pick(Some("en"), &[("LANG", "de_AT")]), Language::English);
        // LC_ALL before LC_MESSAGES before LANG; LANGUAGE's list first, unless the locale is C.
        assert_eq!(
            pick(None, &[("LC_ALL", "de_CH.UTF-8"), ("LANG", "en_US")]),
            Language::German
        );
        assert_eq!(
            pick(None, &[("LC_MESSAGES", "en_GB"), ("LANG", "de_DE")]),
            Language::English
        );
        assert_eq!(
            pick(None, &[("LANGUAGE", "fr:de"), ("LANG", "en_US.UTF-8")]),
            Language::German
        );
        assert_eq!(
            pick(None, &[("LANGUAGE", "de"), ("LANG", "C.UTF-8")]),
            Language::English
        );
        assert_eq!(Language::from_locale("de-AT"), Some(Language::German));
        assert_eq!(Language::from_locale("POSIX"), None);
    }
}
