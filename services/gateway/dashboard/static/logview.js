// A log viewer that stays smooth with hundreds of thousands of lines: every row has the same height, and only
// the rows in view (plus a margin) are in the DOM, re-drawn at most once per animation frame. Lines are kept as
// plain records; ANSI colours are turned into spans only for the rows drawn.

const ROW = 18;          // px, matches --row in style.css
const MARGIN = 40;       // rows drawn above and below the viewport

const ESC = /\x1b\[([0-9;]*)([A-Za-z])/g;

function escapeHtml(s) {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

// ANSI SGR codes → <span class="…">; other escape sequences are dropped. Matches of `needle` (lower-case)
// are marked on the visible text, across colour changes.
export function ansiToHtml(text, needle = "") {
  const ranges = [];
  if (needle) {
    const lower = plain(text).toLowerCase();
    for (let j = lower.indexOf(needle); j !== -1; j = lower.indexOf(needle, j + needle.length)) {
      ranges.push([j, j + needle.length]);
    }
  }
  let out = "";
  let cls = [];
  let last = 0;
  let offset = 0;  // position in the visible (escape-free) text
  const emit = (chunk) => {
    if (!chunk) return;
    const html = ranges.length ? marked(chunk, offset, ranges) : escapeHtml(chunk);
    offset += chunk.length;
    out += cls.length ? `<span class="${cls.join(" ")}">${html}</span>` : html;
  };
  for (const m of text.matchAll(ESC)) {
    emit(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[2] !== "m") continue;
    for (const code of (m[1] || "0").split(";").map(Number)) {
      if (code === 0) cls = [];
      else if (code === 1) cls.push("b");
      else if (code === 3) cls.push("i");
      else if (code === 4) cls.push("u");
      else if (code === 39) cls = cls.filter((c) => !c.startsWith("f"));
      else if (code === 49) cls = cls.filter((c) => !c.startsWith("g"));
      else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) {
        cls = cls.filter((c) => !c.startsWith("f")); cls.push("f" + code);
      } else if (code >= 40 && code <= 47) {
        cls = cls.filter((c) => !c.startsWith("g")); cls.push("g" + code);
      }
    }
  }
  emit(text.slice(last));
  return out;
}

// `chunk` starts at `offset` of the visible text: wrap the parts inside any [start, end) range in <mark>.
function marked(chunk, offset, ranges) {
  let html = "";
  let i = 0;
  for (const [start, end] of ranges) {
    const a = Math.max(start - offset, i);
    const b = Math.min(end - offset, chunk.length);
    if (b <= a) continue;
    html += escapeHtml(chunk.slice(i, a)) + "<mark>" + escapeHtml(chunk.slice(a, b)) + "</mark>";
    i = b;
  }
  return html + escapeHtml(chunk.slice(i));
}

export function plain(text) {
  return text.replace(ESC, "");
}

export class LogView {
  constructor(element, { onFollowChange } = {}) {
    this.el = element;
    this.el.classList.add("log");
    this.el.innerHTML = '<div class="spacer"><div class="rows"></div></div>';
    this.spacer = this.el.firstChild;
    this.rowsEl = this.spacer.firstChild;
    this.lines = [];          // {seq, text, stream, stage}
    this.follow = true;
    this.needle = "";
    this.hits = [];           // indices of matching lines
    this.hit = -1;            // the current match
    this.target = -1;         // the line of #L<n>
    this.pending = false;
    this.onFollowChange = onFollowChange || (() => {});
    this.autoTop = -1;        // where following last put the scroll position (its own scroll events)
    this.el.addEventListener("scroll", () => {
      // The user scrolling up stops following; scrolling back to the bottom resumes it.
      if (Math.abs(this.el.scrollTop - this.autoTop) > 1) {
        const atBottom = this.el.scrollTop + this.el.clientHeight >= this.el.scrollHeight - ROW * 2;
        if (this.follow !== atBottom) this.setFollow(atBottom);
      }
      this.schedule();
    });
  }

  setFollow(on) {
    this.follow = on;
    this.onFollowChange(on);
    if (on) this.schedule();
  }

  append(records) {
    for (const r of records) this.lines.push(r);
    if (this.needle) {
      const start = this.lines.length - records.length;
      for (let i = start; i < this.lines.length; i++) {
        if (plain(this.lines[i].text).toLowerCase().includes(this.needle)) this.hits.push(i);
      }
    }
    this.schedule();
  }

  get lastSeq() {
    return this.lines.length ? this.lines[this.lines.length - 1].seq : 0;
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  draw() {
    this.spacer.style.height = `${this.lines.length * ROW}px`;
    if (this.follow) {
      this.el.scrollTop = this.el.scrollHeight;
      this.autoTop = this.el.scrollTop;
    }
    const first = Math.max(0, Math.floor(this.el.scrollTop / ROW) - MARGIN);
    const last = Math.min(this.lines.length, Math.ceil((this.el.scrollTop + this.el.clientHeight) / ROW) + MARGIN);
    const current = this.hit >= 0 ? this.hits[this.hit] : -1;
    let html = "";
    for (let i = first; i < last; i++) {
      const line = this.lines[i];
      const n = i + 1;
      const cls = ["row"];
      if (i === current) cls.push("hit");
      if (i === this.target) cls.push("target");
      const kind = line.stream === "system" ? " sys" : line.stream === "stderr" ? " err" : "";
      html += `<div class="${cls.join(" ")}" data-line="${n}"><a class="ln" id="L${n}" href="#L${n}">${n}</a>` +
              `<span class="txt${kind}">${ansiToHtml(line.text, this.needle)}</span></div>`;
    }
    this.rowsEl.style.top = `${first * ROW}px`;
    this.rowsEl.innerHTML = html;
    this.drawn = [first, last];
  }

  scrollToLine(n, { highlight = true } = {}) {
    const i = Math.min(Math.max(n - 1, 0), Math.max(this.lines.length - 1, 0));
    if (highlight) this.target = i;
    this.setFollow(false);
    this.el.scrollTop = Math.max(0, i * ROW - this.el.clientHeight / 3);
    this.autoTop = this.el.scrollTop;
    this.schedule();
  }

  search(text) {
    this.needle = text.toLowerCase();
    this.hits = [];
    this.hit = -1;
    if (this.needle) {
      for (let i = 0; i < this.lines.length; i++) {
        if (plain(this.lines[i].text).toLowerCase().includes(this.needle)) this.hits.push(i);
      }
    }
    if (this.hits.length) this.next(1);
    else this.schedule();
    return this.hits.length;
  }

  next(step) {
    if (!this.hits.length) return;
    this.hit = (this.hit + step + this.hits.length) % this.hits.length;
    this.scrollToLine(this.hits[this.hit] + 1, { highlight: false });
  }

  text() {
    return this.lines.map((l) => l.text).join("\n") + (this.lines.length ? "\n" : "");
  }
}
