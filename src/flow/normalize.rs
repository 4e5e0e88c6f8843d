//! How user text is compared with keywords and button titles: case, accents and extra
//! spaces do not matter ("  Menú " matches "menu").

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Lowercase, without accents, trimmed, inner whitespace collapsed to one space.
pub fn normalize(text: &str) -> String {
    let folded: String = text
        .nfd()
        .filter(|c| !is_combining_mark(*c))
        .collect::<String>()
        .to_lowercase();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn ignores_case_accents_and_spaces() {
        assert_eq!(normalize("  Menú   PRINCIPAL "), "menu principal");
        assert_eq!(normalize("Hallo"), "hallo");
        assert_eq!(normalize("Ça va"), "ca va");
    }
}
