//! The app's look: a type scale, spacing, and a light and a dark palette in which every text
//! colour meets WCAG AA contrast (4.5:1) against the background it is drawn on. The tests below
//! check each pair; a colour changed here without looking fails them.
//!
//! [`apply`] puts both styles into the context and chooses one: the settings' theme, or the
//! desktop's (eframe follows the system setting; dark where the desktop does not say).

use egui::{Color32, FontFamily, FontId, Stroke, TextStyle, Theme};

use crate::settings;

/// The colours of one theme. Text colours are named for what they say; `*_fill` are the
/// backgrounds of buttons with [`Palette::on_fill`] text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Palette {
    /// The window's background.
    pub panel: Color32,
    /// The background of text fields.
    pub field: Color32,
    /// Ordinary text.
    pub text: Color32,
    /// Secondary text (hints, "measuring…").
    pub weak: Color32,
    /// Errors.
    pub error: Color32,
    /// Warnings (a changed key, a device that moved).
    pub warn: Color32,
    /// Good news (encrypted, online).
    pub good: Color32,
    /// Links.
    pub link: Color32,
    /// A button at rest, hovered and pressed, and its text.
    pub button: [Color32; 3],
    pub button_text: Color32,
    /// Selected items (a chosen device, selected text) and their text.
    pub selection: Color32,
    pub on_selection: Color32,
    /// Accept and Call: white text on green; hang up and Reject: white text on red.
    pub good_fill: Color32,
    pub stop_fill: Color32,
    pub on_fill: Color32,
}

/// Light text on dark grey.
pub(super) const DARK: Palette = Palette {
    panel: Color32::from_rgb(32, 33, 36),
    field: Color32::from_rgb(20, 21, 23),
    text: Color32::from_rgb(225, 225, 228),
    weak: Color32::from_rgb(165, 167, 172),
    error: Color32::from_rgb(255, 125, 120),
    warn: Color32::from_rgb(255, 180, 80),
    good: Color32::from_rgb(110, 210, 140),
    link: Color32::from_rgb(125, 180, 255),
    button: [
        Color32::from_rgb(62, 64, 70),
        Color32::from_rgb(78, 81, 89),
        Color32::from_rgb(96, 99, 109),
    ],
    button_text: Color32::from_rgb(238, 238, 242),
    selection: Color32::from_rgb(38, 84, 140),
    on_selection: Color32::WHITE,
    good_fill: Color32::from_rgb(28, 125, 60),
    stop_fill: Color32::from_rgb(185, 45, 45),
    on_fill: Color32::WHITE,
};

/// Dark text on light grey.
pub(super) const LIGHT: Palette = Palette {
    panel: Color32::from_rgb(246, 246, 248),
    field: Color32::WHITE,
    text: Color32::from_rgb(28, 28, 32),
    weak: Color32::from_rgb(92, 94, 100),
    error: Color32::from_rgb(176, 24, 24),
    warn: Color32::from_rgb(140, 80, 0),
    good: Color32::from_rgb(20, 115, 50),
    link: Color32::from_rgb(20, 90, 180),
    button: [
        Color32::from_rgb(225, 226, 230),
        Color32::from_rgb(210, 212, 218),
        Color32::from_rgb(192, 195, 203),
    ],
    button_text: Color32::from_rgb(20, 20, 24),
    selection: Color32::from_rgb(175, 208, 245),
    on_selection: Color32::BLACK,
    good_fill: Color32::from_rgb(28, 125, 60),
    stop_fill: Color32::from_rgb(185, 45, 45),
    on_fill: Color32::WHITE,
};

/// How much of the warning colour tints a warning banner's background.
pub(super) const BANNER_TINT: f32 = 0.12;

/// The palette of the theme `visuals` belong to.
pub(super) fn palette(visuals: &egui::Visuals) -> &'static Palette {
    if visuals.dark_mode { &DARK } else { &LIGHT }
}

/// The type scale, in points: small print, body text, buttons, figures, headings. Names (28),
/// the call clock (22) and the code to compare (40) are set where they are drawn.
pub(super) const TYPE_SCALE: [(TextStyle, f32, FontFamily); 5] = [
    (TextStyle::Small, 12.5, FontFamily::Proportional),
    (TextStyle::Body, 15.0, FontFamily::Proportional),
    (TextStyle::Button, 15.0, FontFamily::Proportional),
    (TextStyle::Monospace, 14.0, FontFamily::Monospace),
    (TextStyle::Heading, 22.0, FontFamily::Proportional),
];

/// egui's style for `theme` with the app's palette, type scale and spacing.
pub(super) fn style(theme: Theme) -> egui::Style {
    let p = match theme {
        Theme::Dark => &DARK,
        Theme::Light => &LIGHT,
    };
    let mut style = egui::Style {
        visuals: theme.default_visuals(),
        ..egui::Style::default()
    };
    style.text_styles = TYPE_SCALE
        .iter()
        .map(|(name, size, family)| (name.clone(), FontId::new(*size, family.clone())))
        .collect();
    let spacing = &mut style.spacing;
    spacing.item_spacing = egui::vec2(8.0, 7.0);
    spacing.button_padding = egui::vec2(12.0, 5.0);
    spacing.interact_size.y = 26.0;

    let v = &mut style.visuals;
    v.panel_fill = p.panel;
    v.window_fill = p.panel;
    v.extreme_bg_color = p.field;
    v.text_edit_bg_color = Some(p.field);
    v.faint_bg_color = p.button[0].gamma_multiply(0.4);
    v.weak_text_color = Some(p.weak);
    v.error_fg_color = p.error;
    v.warn_fg_color = p.warn;
    v.hyperlink_color = p.link;
    v.selection.bg_fill = p.selection;
    v.selection.stroke = Stroke::new(1.0, p.on_selection);
    let w = &mut v.widgets;
    w.noninteractive.fg_stroke = Stroke::new(1.0, p.text);
    w.noninteractive.bg_fill = p.panel;
    w.noninteractive.weak_bg_fill = p.panel;
    for (state, fill) in [
        (&mut w.inactive, p.button[0]),
        (&mut w.hovered, p.button[1]),
        (&mut w.active, p.button[2]),
        (&mut w.open, p.button[1]),
    ] {
        state.weak_bg_fill = fill;
        state.bg_fill = fill;
        state.fg_stroke = Stroke::new(state.fg_stroke.width, p.button_text);
    }
    style
}

/// Installs both styles (once per context is enough; again is harmless) and chooses `choice`.
pub(super) fn apply(ctx: &egui::Context, choice: settings::Theme) {
    ctx.set_style_of(Theme::Dark, style(Theme::Dark));
    ctx.set_style_of(Theme::Light, style(Theme::Light));
    ctx.set_theme(match choice {
        settings::Theme::System => egui::ThemePreference::System,
        settings::Theme::Light => egui::ThemePreference::Light,
        settings::Theme::Dark => egui::ThemePreference::Dark,
    });
}

/// WCAG 2.x contrast ratio of two opaque colours: 1 (none) to 21 (black on white).
#[cfg(test)]
pub(super) fn contrast(a: Color32, b: Color32) -> f32 {
    fn luminance(c: Color32) -> f32 {
        let lin = |v: u8| {
            let v = f32::from(v) / 255.0;
            if v <= 0.040_45 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(c.r()) + 0.7152 * lin(c.g()) + 0.0722 * lin(c.b())
    }
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WCAG AA for normal-size text.
    const AA: f32 = 4.5;

    /// Every (what, text, background) pair the views draw, in one palette.
    fn pairs(p: &Palette) -> Vec<(&'static str, Color32, Color32)> {
        let mut v = vec![
            ("text", p.text, p.panel),
            ("weak text", p.weak, p.panel),
            ("error", p.error, p.panel),
            ("warning", p.warn, p.panel),
            ("good", p.good, p.panel),
            ("link", p.link, p.panel),
            ("typed text", p.text, p.field),
            ("hint in a field", p.weak, p.field),
            ("error in a field's row", p.error, p.field),
            ("selected", p.on_selection, p.selection),
            ("Accept / Call", p.on_fill, p.good_fill),
            ("Reject / Hang up", p.on_fill, p.stop_fill),
            (
                "warning banner",
                p.warn,
                tinted(p.panel, p.warn, BANNER_TINT),
            ),
            (
                "text in a warning banner",
                p.text,
                tinted(p.panel, p.warn, BANNER_TINT),
            ),
        ];
        for (i, fill) in p.button.iter().enumerate() {
            v.push((
                ["button", "hovered button", "pressed button"][i],
                p.button_text,
                *fill,
            ));
        }
        v
    }

    /// `panel` with `tint` painted over it at `amount` (what `gamma_multiply` + blending does).
    fn tinted(panel: Color32, tint: Color32, amount: f32) -> Color32 {
        let mix = |p: u8, t: u8| (f32::from(t) * amount + f32::from(p) * (1.0 - amount)) as u8;
        Color32::from_rgb(
            mix(panel.r(), tint.r()),
            mix(panel.g(), tint.g()),
            mix(panel.b(), tint.b()),
        )
    }

    #[test]
    fn every_text_colour_meets_wcag_aa_in_both_themes() {
        let mut failures = Vec::new();
        for (theme, p) in [("dark", &DARK), ("light", &LIGHT)] {
            for (what, fg, bg) in pairs(p) {
                let ratio = contrast(fg, bg);
                if ratio < AA {
                    failures.push(format!("{theme}: {what} {ratio:.2}:1"));
                }
            }
        }
        assert!(failures.is_empty(), "below 4.5:1: {failures:?}");
    }

    #[test]
    fn contrast_matches_the_wcag_reference_values() {
        assert!((contrast(Color32::BLACK, Color32::WHITE) - 21.0).abs() < 0.01);
        assert!((contrast(Color32::WHITE, Color32::WHITE) - 1.0).abs() < 0.001);
        // egui's stock error red on its dark panel: the 7 px red the issue complained of.
        let stock = contrast(Color32::from_rgb(255, 0, 0), Color32::from_gray(27));
        assert!(stock < AA, "{stock}");
        // #767676 on white is the classic 4.54:1 boundary grey.
        let grey = contrast(Color32::from_gray(0x76), Color32::WHITE);
        assert!((grey - 4.54).abs() < 0.01, "{grey}");
    }

    #[test]
    fn the_styles_carry_the_palettes_and_the_type_scale() {
        for (theme, p) in [(Theme::Dark, &DARK), (Theme::Light, &LIGHT)] {
            let s = style(theme);
            assert_eq!(s.visuals.dark_mode, theme == Theme::Dark);
            assert_eq!(palette(&s.visuals), p);
            assert_eq!(s.visuals.text_color(), p.text);
            assert_eq!(s.visuals.error_fg_color, p.error);
            assert_eq!(s.visuals.widgets.inactive.text_color(), p.button_text);
            assert_eq!(s.text_styles[&TextStyle::Body].size, 15.0);
            assert!(
                s.text_styles[&TextStyle::Small].size >= 12.0,
                "small print stays legible"
            );
        }
    }
}
