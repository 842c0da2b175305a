// An mdbook preprocessor that renders the book's math with KaTeX at build time, so that the
// built pages need no script and no network to show formulas.
//
// Convention, in every chapter: `$…$` inline and `$$…$$` display (which may span lines).
// `\$` is a literal dollar sign. Code spans and fenced code blocks are left alone.
// A formula KaTeX cannot parse fails the build with the chapter and the formula.
//
// Run by mdbook (docs/book.toml) as `node katex/preprocess.mjs`; it needs `npm ci` in docs/
// first, which `cargo xtask docs` does. The stylesheet and fonts are copied next to the
// chapters (src/katex/, not tracked) so that mdbook ships them with the pages.

import { createRequire } from "node:module";
import { cpSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";

const require = createRequire(import.meta.url);
const katex = require("katex");

/** Characters markdown would act on, written as entities in KaTeX's text nodes. */
const MARKDOWN_SPECIAL = /[\\`*_[\]|~$<>!#]/g;

/** KaTeX's HTML for one formula, with markdown-special characters in text escaped. */
export function render(tex, displayMode, where) {
  let html;
  try {
    html = katex.renderToString(tex, {
      displayMode,
      throwOnError: true,
      strict: "error",
      output: "htmlAndMathml",
    });
  } catch (e) {
    throw new Error(`${where}: cannot render ${displayMode ? "$$" : "$"}${tex}${displayMode ? "$$" : "$"}: ${e.message}`);
  }
  // Text between tags (the visible glyphs and the MathML annotation, which holds the TeX
  // source) goes through markdown after us: escape what markdown would read as syntax.
  return html.replace(/>([^<]+)</g, (_, text) =>
    ">" + text.replace(MARKDOWN_SPECIAL, (c) => (c === "<" || c === ">" ? c : `&#${c.charCodeAt(0)};`)) + "<",
  );
}

/**
 * Renders every `$…$` and `$$…$$` of a chapter's markdown, skipping fenced code blocks and
 * code spans. Display math becomes a block of its own.
 */
export function renderMath(markdown, where) {
  const out = [];
  let fence = null; // the opening fence while inside a fenced code block
  const lines = markdown.split("\n");
  let prose = []; // consecutive lines outside fences, rendered together ($$ may span lines)
  const flush = () => {
    if (prose.length) out.push(renderProse(prose.join("\n"), where));
    prose = [];
  };
  for (const line of lines) {
    const m = line.match(/^ {0,3}(`{3,}|~{3,})/);
    if (fence === null && m) {
      flush();
      fence = m[1];
      out.push(line);
    } else if (fence !== null) {
      out.push(line);
      if (line.trim().startsWith(fence[0].repeat(fence.length)) && line.trim().replace(/[`~]/g, "") === "") {
        fence = null;
      }
    } else {
      prose.push(line);
    }
  }
  flush();
  return out.join("\n");
}

function renderProse(text, where) {
  let out = "";
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && text[i + 1] === "$") {
      out += "\\$";
      i += 2;
    } else if (c === "`") {
      // A code span: as many backticks close it as opened it.
      let n = 0;
      while (text[i + n] === "`") n++;
      const ticks = "`".repeat(n);
      const end = text.indexOf(ticks, i + n);
      const stop = end < 0 ? i + n : end + n;
      out += text.slice(i, stop);
      i = stop;
    } else if (c === "$" && text[i + 1] === "$") {
      const end = text.indexOf("$$", i + 2);
      if (end < 0) throw new Error(`${where}: a $$ is not closed: ${text.slice(i, i + 60)}`);
      const html = render(text.slice(i + 2, end).trim(), true, where);
      out += `\n\n<div class="math-display">${html}</div>\n\n`;
      i = end + 2;
    } else if (c === "$") {
      const end = closingDollar(text, i + 1);
      if (end < 0) throw new Error(`${where}: a $ is not closed (write \\$ for a dollar sign): ${text.slice(i, i + 60)}`);
      out += render(text.slice(i + 1, end), false, where);
      i = end + 1;
    } else {
      out += c;
      i += 1;
    }
  }
  return out;
}

/** The index of the `$` closing an inline formula opened just before `from`, or -1. */
function closingDollar(text, from) {
  if (/\s/.test(text[from] ?? " ")) return -1;
  for (let j = from; j < text.length; j++) {
    if (text[j] === "\n" && text[j + 1] === "\n") return -1; // formulas stay in one paragraph
    if (text[j] === "\\") {
      j++;
      continue;
    }
    if (text[j] === "$") return /\s/.test(text[j - 1]) ? -1 : j;
  }
  return -1;
}

/** Renders the content of every chapter, whatever the nesting of the book's JSON. */
function walk(node, path) {
  if (Array.isArray(node)) {
    node.forEach((n, k) => walk(n, path));
  } else if (node && typeof node === "object") {
    if (node.Chapter && typeof node.Chapter.content === "string") {
      const ch = node.Chapter;
      ch.content = renderMath(ch.content, ch.source_path ?? ch.path ?? ch.name);
    }
    for (const v of Object.values(node)) walk(v, path);
  }
}

async function main() {
  if (process.argv[2] === "supports") {
    process.exit(process.argv[3] === "html" ? 0 : 1);
  }
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const [context, book] = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const root = context.root;
  const src = join(root, context.config?.book?.src ?? "src");
  const dist = dirname(require.resolve("katex/dist/katex.min.css"));
  mkdirSync(join(src, "katex"), { recursive: true });
  cpSync(join(dist, "katex.min.css"), join(src, "katex", "katex.min.css"));
  cpSync(join(dist, "fonts"), join(src, "katex", "fonts"), { recursive: true });
  walk(book, []);
  process.stdout.write(JSON.stringify(book));
}

if (process.argv[1] && import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => {
    console.error(`katex preprocessor: ${e.message}`);
    process.exit(1);
  });
}
