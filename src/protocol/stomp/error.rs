//! What can go wrong decoding STOMP, and the size limits the decoder enforces.

/// Size limits for one incoming frame, with Apache ActiveMQ 5.17's names and defaults
/// (`StompWireFormat`, `StompCodec`). The STOMP connection fills them from the connector's
/// options; [`StompLimits::default`] is ActiveMQ's out-of-the-box behaviour.
///
/// All sizes are in bytes of the wire form (before unescaping), line terminators excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StompLimits {
    /// Longest command line (ActiveMQ `MAX_COMMAND_LENGTH`, fixed at 1,024).
    pub max_command_length: usize,
    /// Longest header line (ActiveMQ `MAX_HEADER_LENGTH`, fixed at 10,240).
    pub max_header_length: usize,
    /// Most header lines in one frame (ActiveMQ `MAX_HEADERS`, fixed at 1,000).
    pub max_headers: usize,
    /// Largest body (ActiveMQ `wireFormat.maxDataLength`, default 104,857,600 = 100 MiB); a
    /// `content-length` above it is refused before any body byte is read.
    pub max_data_length: usize,
    /// Largest frame: command, header lines and body together (ActiveMQ
    /// `wireFormat.maxFrameSize`, default unlimited: `usize::MAX`).
    pub max_frame_size: usize,
}

impl Default for StompLimits {
    fn default() -> StompLimits {
        StompLimits {
            max_command_length: 1024,
            max_header_length: 10 * 1024,
            max_headers: 1000,
            max_data_length: 100 * 1024 * 1024,
            max_frame_size: usize::MAX,
        }
    }
}

/// Why a STOMP byte stream could not be decoded. The stream cannot continue after one: the
/// connection sends an ERROR frame whose `message` header is this error's `Display` text (the
/// wording follows ActiveMQ's where it has one, plus the limit's name and value) and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StompError {
    /// The command line is longer than [`StompLimits::max_command_length`].
    #[error("The maximum command length was exceeded (max_command_length {max} bytes)")]
    CommandTooLong { max: usize },
    /// A header line is longer than [`StompLimits::max_header_length`].
    #[error("The maximum header length was exceeded (max_header_length {max} bytes)")]
    HeaderTooLong { max: usize },
    /// More header lines than [`StompLimits::max_headers`].
    #[error("The maximum number of headers was exceeded (max_headers {max})")]
    TooManyHeaders { max: usize },
    /// A body (announced by `content-length`, or read up to NUL) larger than
    /// [`StompLimits::max_data_length`].
    #[error("The maximum data length was exceeded (maxDataLength {max} bytes)")]
    DataTooLong { max: usize },
    /// The whole frame is larger than [`StompLimits::max_frame_size`].
    #[error("The maximum frame size was exceeded (maxFrameSize {max} bytes)")]
    FrameTooLarge { max: usize },
    /// The command line names no STOMP command (commands are case-sensitive). Holds at most
    /// the first 64 characters, lossily decoded.
    #[error("Unknown STOMP action: {0}")]
    UnknownCommand(String),
    /// A control byte (other than tab and CR) before the end of the command line: the peer does
    /// not speak STOMP at all (an MQTT CONNECT starts with 0x10). Refused at once rather than
    /// after the command-length limit or the connect timeout (ActiveMQ waits for the line).
    #[error("Not a STOMP frame: byte 0x{0:02x} in the command line (is this an MQTT or other binary client on a STOMP port?)")]
    NotStomp(u8),
    /// A NUL byte inside a header line (a frame ends at NUL: STOMP 1.2 "Augmented BNF" has no
    /// NUL in `header-name` or `header-value`).
    #[error("A header contains a NUL byte")]
    NulInHeader,
    /// A header line without `:` (STOMP 1.2 "Augmented BNF": `header-name ":" header-value`).
    #[error("Unable to parse header line (no ':' separator)")]
    MissingColon,
    /// A backslash followed by something other than the escapes the negotiated version
    /// defines (1.1: `\n` `\c` `\\`; 1.2 also `\r`): STOMP 1.2 "Value Encoding" makes it fatal.
    #[error("Undefined escape sequence in a header: '\\{0}'")]
    UndefinedEscape(char),
    /// A backslash at the very end of a header name or value.
    #[error("Incomplete escape sequence at the end of a header")]
    IncompleteEscape,
    /// A header name or value that is not UTF-8 (STOMP 1.2 "Value Encoding").
    #[error("A header is not valid UTF-8")]
    InvalidUtf8,
    /// `content-length` is not a non-negative decimal integer.
    #[error("Specified content-length is not a valid integer")]
    InvalidContentLength,
    /// The `content-length` bytes were followed by something other than NUL.
    #[error("content-length bytes were read and there was no trailing null byte")]
    MissingNul,
}
