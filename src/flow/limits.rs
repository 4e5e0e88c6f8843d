//! WhatsApp's limits on what a message may contain, in characters
//! (shared/whatsapp/README.md §3). Checked on static text when a bot loads and on
//! rendered text before a message is sent.

pub const TEXT_BODY: usize = 4096;
pub const INTERACTIVE_BODY: usize = 1024;
pub const LIST_BODY: usize = 4096;
pub const HEADER: usize = 60;
pub const FOOTER: usize = 60;
pub const BUTTON_TITLE: usize = 20;
pub const BUTTON_ID: usize = 256;
pub const LIST_BUTTON: usize = 20;
pub const LIST_ROWS: usize = 10;
pub const SECTION_TITLE: usize = 24;
pub const ROW_TITLE: usize = 24;
pub const ROW_DESCRIPTION: usize = 72;
pub const ROW_ID: usize = 200;
pub const CAPTION: usize = 1024;
pub const CTA_DISPLAY_TEXT: usize = 20;
pub const FLOW_CTA: usize = 30;
pub const TEMPLATE_NAME: usize = 512;

/// The longest `wait:` a flow may hold. A wait is a typing pause inside one turn, shown
/// with WhatsApp's typing indicator, which lasts at most 25 seconds; a longer wait would
/// hold the user's turn (and every message they send meanwhile) for that long. Longer
/// pauses need durable timers, which are planned.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(25);
