/**
 * A small spectrum view of what is playing (log frequency axis, 30 Hz – 20 kHz), with the
 * dominant frequency written in the corner. Drawn on animation frames, so it costs nothing in a
 * hidden tab.
 */
import { analyse } from './analysis.js';

const F_MIN = 30;
const F_MAX = 20_000;
const DB_MIN = -110;
const DB_MAX = -10;
/** How fast a bar falls back (dB per frame): the view stays readable without smoothing the data. */
const FALL_DB = 2.5;

export class Scope {
  private readonly ctx: CanvasRenderingContext2D;
  private levels = new Float32Array(0);
  private spectrum = new Float32Array(0);
  private label = { text: 'silence', on: false };
  private frame = 0;
  private colors = { accent: '#4f46e5', muted: '#667085', line: '#e4e7ec' };

  constructor(
    private readonly canvas: HTMLCanvasElement,
    private readonly source: () => AnalyserNode | undefined,
  ) {
    this.ctx = canvas.getContext('2d')!;
    matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => this.readColors());
    this.readColors();
  }

  private readColors(): void {
    const style = getComputedStyle(document.documentElement);
    const get = (name: string, fallback: string) => style.getPropertyValue(name).trim() || fallback;
    this.colors = { accent: get('--accent', '#4f46e5'), muted: get('--muted', '#667085'), line: get('--line', '#e4e7ec') };
  }

  /** Draws one frame. */
  draw(): void {
    const { canvas, ctx } = this;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    ctx.clearRect(0, 0, w, h);
    this.drawGrid(w, h, dpr);

    const analyser = this.source();
    const columns = Math.max(2, Math.floor(w / (3 * dpr)));
    if (this.levels.length !== columns) this.levels = new Float32Array(columns).fill(DB_MIN);
    if (analyser) {
      if (this.spectrum.length !== analyser.frequencyBinCount) this.spectrum = new Float32Array(analyser.frequencyBinCount);
      analyser.getFloatFrequencyData(this.spectrum);
      const binHz = analyser.context.sampleRate / analyser.fftSize;
      for (let x = 0; x < columns; x++) {
        const f0 = F_MIN * (F_MAX / F_MIN) ** (x / columns);
        const f1 = F_MIN * (F_MAX / F_MIN) ** ((x + 1) / columns);
        let db = DB_MIN;
        for (let i = Math.floor(f0 / binHz); i <= Math.ceil(f1 / binHz) && i < this.spectrum.length; i++) {
          db = Math.max(db, this.spectrum[i]!);
        }
        this.levels[x] = Math.max(db, this.levels[x]! - FALL_DB);
      }
    } else {
      for (let x = 0; x < columns; x++) this.levels[x] = Math.max(DB_MIN, this.levels[x]! - FALL_DB);
    }

    // The spectrum as a filled curve.
    const y = (db: number) => h - ((Math.min(DB_MAX, Math.max(DB_MIN, db)) - DB_MIN) / (DB_MAX - DB_MIN)) * (h - 6 * dpr);
    const step = w / (columns - 1);
    ctx.beginPath();
    ctx.moveTo(0, h);
    for (let x = 0; x < columns; x++) ctx.lineTo(x * step, y(this.levels[x]!));
    ctx.lineTo(w, h);
    ctx.closePath();
    const gradient = ctx.createLinearGradient(0, 0, 0, h);
    gradient.addColorStop(0, this.colors.accent);
    gradient.addColorStop(1, 'transparent');
    ctx.globalAlpha = 0.35;
    ctx.fillStyle = gradient;
    ctx.fill();
    ctx.globalAlpha = 1;
    ctx.beginPath();
    for (let x = 0; x < columns; x++) ctx.lineTo(x * step, y(this.levels[x]!));
    ctx.strokeStyle = this.colors.accent;
    ctx.lineWidth = 1.5 * dpr;
    ctx.stroke();

    // The dominant frequency.
    if (this.frame++ % 8 === 0) {
      const a = analyser ? analyse(analyser) : undefined;
      this.label =
        a && a.frequency > 0
          ? { text: `${a.frequency.toFixed(0)} Hz · ${(20 * Math.log10(a.rms)).toFixed(0)} dBFS`, on: true }
          : { text: 'silence', on: false };
    }
    ctx.font = `600 ${12 * dpr}px system-ui, sans-serif`;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'top';
    ctx.fillStyle = this.label.on ? this.colors.accent : this.colors.muted;
    ctx.fillText(this.label.text, w - 10 * dpr, 8 * dpr);
  }

  private drawGrid(w: number, h: number, dpr: number): void {
    const { ctx } = this;
    ctx.strokeStyle = this.colors.line;
    ctx.fillStyle = this.colors.muted;
    ctx.lineWidth = dpr;
    ctx.font = `${10 * dpr}px system-ui, sans-serif`;
    ctx.textAlign = 'left';
    ctx.textBaseline = 'bottom';
    for (const f of [100, 1000, 10_000]) {
      const x = Math.round((Math.log(f / F_MIN) / Math.log(F_MAX / F_MIN)) * w) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, 0);
      ctx.lineTo(x, h);
      ctx.stroke();
      const text = f >= 1000 ? `${f / 1000} kHz` : `${f} Hz`;
      // On a narrow canvas the last label would run off the edge: put it left of its line.
      const fits = x + 4 * dpr + ctx.measureText(text).width <= w;
      ctx.textAlign = fits ? 'left' : 'right';
      ctx.fillText(text, fits ? x + 4 * dpr : x - 4 * dpr, h - 4 * dpr);
    }
  }
}
