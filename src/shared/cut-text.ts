/**
 * Text cut short for a message or a record: the first `keep` characters (never half a surrogate
 * pair), then how many were left out. One marker everywhere, so a reader can tell a cut string.
 * The part kept is copied: a slice would keep the whole of `text` alive (V8 strings share their
 * parent's memory), and a cut is made to bound memory.
 */
export function cutText(text: string, keep: number): string {
  if (text.length <= keep) return text;
  const c = text.charCodeAt(keep - 1);
  if (c >= 0xd800 && c <= 0xdbff) keep--;
  const kept = Buffer.from(text.slice(0, keep), 'utf8').toString('utf8');
  return `${kept}… [cut: ${text.length - keep} more characters]`;
}
