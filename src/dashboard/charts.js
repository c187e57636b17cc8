// Small canvas line chart: last N points of one numeric telemetry field.
// Redraws at most once per animation frame; follows the element's size and device pixel ratio.

const MAX_POINTS = 100;

function fmt(v) {
  if (!isFinite(v)) return '';
  const a = Math.abs(v);
  if (a >= 10000 || (a > 0 && a < 0.01)) return v.toExponential(2);
  return String(Math.round(v * 100) / 100);
}

function fmtTime(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export class LineChart {
  /** @param {HTMLCanvasElement} canvas @param {string} label */
  constructor(canvas, label) {
    this.canvas = canvas;
    this.label = label;
    this.points = []; // [{t: ms, v: number}] oldest first
    this.pending = false;
    this.ro = typeof ResizeObserver === 'function' ? new ResizeObserver(() => this.draw()) : null;
    if (this.ro) this.ro.observe(canvas);
    canvas.setAttribute('role', 'img');
    this.updateLabel();
  }

  /** Replace all points (e.g. from the REST history, oldest first). */
  setPoints(points) {
    this.points = points.filter((p) => isFinite(p.v)).slice(-MAX_POINTS);
    this.schedule();
  }

  push(t, v) {
    if (!isFinite(v)) return;
    const pts = this.points;
    // keep time order even if a push arrives slightly out of order
    if (pts.length && t < pts[pts.length - 1].t) {
      let i = pts.length - 1;
      while (i > 0 && pts[i - 1].t > t) i--;
      pts.splice(i, 0, { t, v });
    } else {
      pts.push({ t, v });
    }
    if (pts.length > MAX_POINTS) pts.splice(0, pts.length - MAX_POINTS);
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  updateLabel() {
    const n = this.points.length;
    const last = n ? this.points[n - 1].v : null;
    this.canvas.setAttribute('aria-label',
      n ? `${this.label}: chart of the last ${n} values, latest ${fmt(last)}` : `${this.label}: no values yet`);
    this.canvas.textContent = n ? `Latest ${this.label}: ${fmt(last)}` : 'No values yet';
  }

  draw() {
    const c = this.canvas;
    if (!c.isConnected) return;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(c.clientWidth, 100);
    const h = Math.max(c.clientHeight, 80);
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const ctx = c.getContext('2d');
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    this.updateLabel();

    const padL = 48, padR = 12, padT = 12, padB = 22;
    const pw = w - padL - padR, ph = h - padT - padB;
    ctx.font = '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
    ctx.fillStyle = '#4b5565';
    ctx.strokeStyle = '#e3e7ee';
    ctx.lineWidth = 1;

    const pts = this.points;
    if (!pts.length) {
      ctx.textAlign = 'center';
      ctx.fillText('Waiting for telemetry…', w / 2, h / 2);
      return;
    }
    let min = Infinity, max = -Infinity;
    for (const p of pts) { if (p.v < min) min = p.v; if (p.v > max) max = p.v; }
    if (min === max) { const d = Math.abs(min) * 0.05 || 1; min -= d; max += d; }
    const span = max - min;
    min -= span * 0.08; max += span * 0.08;
    const t0 = pts[0].t, t1 = pts[pts.length - 1].t;
    const tSpan = t1 - t0 || 1;
    const x = (t) => padL + (pts.length === 1 ? pw : ((t - t0) / tSpan) * pw);
    const y = (v) => padT + ph - ((v - min) / (max - min)) * ph;

    // grid + y labels
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let i = 0; i <= 3; i++) {
      const v = min + ((max - min) * i) / 3;
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(padL, yy); ctx.lineTo(w - padR, yy); ctx.stroke();
      ctx.fillText(fmt(v), padL - 6, yy);
    }
    // x labels
    ctx.textBaseline = 'alphabetic';
    ctx.textAlign = 'left';
    ctx.fillText(fmtTime(t0), padL, h - 6);
    ctx.textAlign = 'right';
    ctx.fillText(fmtTime(t1), w - padR, h - 6);

    // area + line
    ctx.beginPath();
    pts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.v)) : ctx.moveTo(x(p.t), y(p.v))));
    ctx.strokeStyle = '#1d4ed8';
    ctx.lineWidth = 2;
    ctx.lineJoin = 'round';
    ctx.stroke();
    ctx.lineTo(x(t1), padT + ph);
    ctx.lineTo(x(t0), padT + ph);
    ctx.closePath();
    ctx.fillStyle = 'rgba(29, 78, 216, 0.08)';
    ctx.fill();

    const last = pts[pts.length - 1];
    ctx.beginPath();
    ctx.arc(x(last.t), y(last.v), 3.5, 0, Math.PI * 2);
    ctx.fillStyle = '#1d4ed8';
    ctx.fill();
  }

  destroy() {
    if (this.ro) this.ro.disconnect();
  }
}

/** Numeric fields of a telemetry payload (top level, plus one level of nesting as "a.b"). */
export function numericFields(payload) {
  const out = [];
  if (!payload || typeof payload !== 'object') return out;
  for (const [k, v] of Object.entries(payload)) {
    if (typeof v === 'number' && isFinite(v)) out.push([k, v]);
    else if (v && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v)) {
        if (typeof v2 === 'number' && isFinite(v2)) out.push([`${k}.${k2}`, v2]);
      }
    }
  }
  return out;
}
