// A log message with ANSI escape sequences, as DOM nodes.
//
// SGR ("Select Graphic Rendition", ESC [ ... m) sequences colour the text:
// 30-37 and 90-97 (foreground), 40-47 and 100-107 (background), 38/48 with
// ;5;n (256 colours) or ;2;r;g;b, 1 bold, 2 dim, 3 italic, 4 underline, their
// resets 22-24, 39 and 49, and 0 (all). Every other escape sequence (cursor
// moves, screen clears, OSC titles and hyperlinks) is dropped; other control
// characters are shown as their Unicode control pictures. A carriage return
// inside a line keeps what was written after it, as a terminal shows a
// progress bar. Text only ever becomes a Text node: a message can never
// inject markup. Each message starts from the default style.

interface Style {
  fg: number | string | null; // 0-15: a palette class; a string: an rgb() colour
  bg: number | string | null;
  bold: boolean;
  dim: boolean;
  italic: boolean;
  underline: boolean;
}

const plain = (): Style => ({ fg: null, bg: null, bold: false, dim: false, italic: false, underline: false });

// CSI (ESC [ params final), OSC (ESC ] ... BEL or ESC \), or any other ESC + one character.
const ESCAPE = /\x1b(?:\[([0-9;:?<=>]*)[ -/]*([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[\s\S]?)/g;
// C0 controls but tab and newline, and DEL: shown as control pictures (U+2400 + code; DEL U+2421).
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/g;

function picture(char: string): string {
  const code = char.charCodeAt(0);
  return String.fromCharCode(code === 0x7f ? 0x2421 : 0x2400 + code);
}

/** What a terminal would show of each line: the text after its last carriage return. */
function overwrite(message: string): string {
  if (!message.includes("\r")) return message;
  return message
    .split("\n")
    .map((line) => {
      const trimmed = line.endsWith("\r") ? line.slice(0, -1) : line; // CRLF
      return trimmed.slice(trimmed.lastIndexOf("\r") + 1);
    })
    .join("\n");
}

/** The colour of entry `n` of the xterm 256-colour table, beyond the 16 named ones. */
function xterm(n: number): string {
  if (n >= 232) {
    const level = 8 + (n - 232) * 10;
    return `rgb(${level}, ${level}, ${level})`;
  }
  const cube = n - 16;
  const step = (v: number) => (v === 0 ? 0 : 55 + v * 40);
  return `rgb(${step(Math.floor(cube / 36))}, ${step(Math.floor(cube / 6) % 6)}, ${step(cube % 6)})`;
}

/** An extended colour (38/48 ;5;n or ;2;r;g;b) starting at params[i]; the colour and how many params it used. */
function extended(params: number[], i: number): [number | string | null, number] {
  const mode = params[i + 1];
  if (mode === 5) {
    const n = params[i + 2];
    if (n === undefined || n > 255) return [null, 2];
    return [n < 16 ? n : xterm(n), 2];
  }
  if (mode === 2) {
    const [r = 0, g = 0, b = 0] = params.slice(i + 2, i + 5).map((v) => Math.min(v, 255));
    return [`rgb(${r}, ${g}, ${b})`, 4];
  }
  return [null, params.length]; // malformed: ignore the rest
}

function applySgr(style: Style, raw: string): Style {
  const params = raw === "" ? [0] : raw.split(/[;:]/).map((p) => (p === "" ? 0 : Number(p)));
  const next = { ...style };
  for (let i = 0; i < params.length; i++) {
    const p = params[i]!;
    if (p === 0) Object.assign(next, plain());
    else if (p === 1) next.bold = true;
    else if (p === 2) next.dim = true;
    else if (p === 3) next.italic = true;
    else if (p === 4) next.underline = true;
    else if (p === 22) next.bold = next.dim = false;
    else if (p === 23) next.italic = false;
    else if (p === 24) next.underline = false;
    else if (p >= 30 && p <= 37) next.fg = p - 30;
    else if (p >= 90 && p <= 97) next.fg = p - 90 + 8;
    else if (p === 39) next.fg = null;
    else if (p >= 40 && p <= 47) next.bg = p - 40;
    else if (p >= 100 && p <= 107) next.bg = p - 100 + 8;
    else if (p === 49) next.bg = null;
    else if (p === 38 || p === 48) {
      const [colour, used] = extended(params, i);
      if (p === 38) next.fg = colour;
      else next.bg = colour;
      i += used;
    }
    // Anything else (blink, inverse, fonts, ...) is ignored.
  }
  return next;
}

function isPlain(style: Style): boolean {
  return style.fg === null && style.bg === null && !style.bold && !style.dim && !style.italic && !style.underline;
}

function styled(text: string, style: Style): Node {
  const node = document.createTextNode(text);
  if (isPlain(style)) return node;
  const span = document.createElement("span");
  const classes: string[] = [];
  if (typeof style.fg === "number") classes.push(`fg${style.fg}`);
  else if (style.fg !== null) span.style.color = style.fg;
  if (typeof style.bg === "number") classes.push(`bg${style.bg}`);
  else if (style.bg !== null) span.style.backgroundColor = style.bg;
  if (style.bold) classes.push("bold");
  if (style.dim) classes.push("dim");
  if (style.italic) classes.push("italic");
  if (style.underline) classes.push("underline");
  if (classes.length > 0) span.className = classes.join(" ");
  span.appendChild(node);
  return span;
}

/**
 * Append `message`, with its colours, to `parent`; the ranges of `marks`
 * (UTF-16 offsets into `message`: a search's matches) wrapped in <mark>.
 * A message a carriage return rewrites (only its last part is shown) has no
 * such offsets: its row is marked as a whole by the caller instead.
 */
export function renderAnsi(message: string, parent: Node, marks: readonly (readonly [number, number])[] = []): void {
  const text = overwrite(message);
  if (text !== message) marks = [];
  let style = plain();
  let last = 0;
  const put = (chunk: string, marked: boolean) => {
    if (chunk === "") return;
    const node = styled(chunk.replace(CONTROL, picture), style);
    if (!marked) {
      parent.appendChild(node);
      return;
    }
    const mark = document.createElement("mark");
    mark.appendChild(node);
    parent.appendChild(mark);
  };
  const emit = (chunk: string, at: number) => {
    // Cut the chunk (text at offset `at` of the message) at the marks' edges.
    let from = 0;
    for (const [start, end] of marks) {
      if (end <= at + from || start >= at + chunk.length) continue;
      const a = Math.max(start - at, from);
      const b = Math.min(end - at, chunk.length);
      put(chunk.slice(from, a), false);
      put(chunk.slice(a, b), true);
      from = b;
    }
    put(chunk.slice(from), false);
  };
  for (const match of text.matchAll(ESCAPE)) {
    emit(text.slice(last, match.index), last);
    last = match.index + match[0].length;
    if (match[2] === "m" && match[1] !== undefined && !/[?<=>]/.test(match[1])) {
      style = applySgr(style, match[1]);
    }
  }
  emit(text.slice(last), last);
}
