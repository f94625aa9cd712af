// The dashboard test's own accessibility checks (WCAG 2.1 AA, the parts a script can
// decide), run in the page by tests/integration/test_dashboard.py. Returns the problems.
() => {
  const bad = [];
  if (!document.documentElement.lang) bad.push('no lang on <html>');
  if (document.querySelectorAll('h1').length !== 1) bad.push('not exactly one h1');
  let last = 1;
  for (const hd of document.querySelectorAll('h1, h2, h3, h4')) {
    const n = Number(hd.tagName[1]);
    if (n > last + 1) bad.push('heading skips a level: ' + hd.textContent);
    last = n;
  }
  const focusables = document.querySelectorAll('a[href], button, [tabindex="0"], input, select');
  for (const el of focusables) {
    const name = (el.getAttribute('aria-label') || el.textContent || '').trim();
    if (!name) bad.push('control without a name: ' + el.outerHTML.slice(0, 80));
  }
  for (const el of document.querySelectorAll('svg[role="img"], svg[role="group"]'))
    if (!el.getAttribute('aria-label')) bad.push('unlabelled svg');
  for (const el of document.querySelectorAll('#map .marker'))
    if (el.getAttribute('role') !== 'button' || el.tabIndex !== 0) bad.push('marker not a button');
  const rgb = (s) => { const m = s.match(/[\d.]+/g).map(Number); return m.length > 3 ? m : [...m, 1]; };
  const lum = ([r, g, b]) => { const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bg = (el) => { for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor); if (c[3] > 0) return c; } return [255, 255, 255, 1]; };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || seen.has(el) || el.closest('svg') || el.closest('[hidden]')) continue;
    seen.add(el);
    const st = getComputedStyle(el);
    if (st.visibility === 'hidden' || st.display === 'none' || el.getClientRects().length === 0) continue;
    const fg = rgb(st.color), b = bg(el);
    const l1 = lum(fg), l2 = lum(b);
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    if (ratio < 4.5) bad.push(`contrast ${ratio.toFixed(2)} for "${n.textContent.trim().slice(0, 40)}"`);
  }
  if (document.documentElement.scrollWidth > document.documentElement.clientWidth + 1)
    bad.push('horizontal scrolling: ' + document.documentElement.scrollWidth);
  return bad;
}
