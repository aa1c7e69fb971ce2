/**
 * Sound effects on a play's PCM before encoding: a gain and Lavalink's filters, as one ffmpeg
 * `-af` chain. The engine's play takes them (`gain`, `filters`), the gateway keeps them with a
 * track (a seek plays on with them), the Lavalink node reads them from a player PATCH. They travel
 * as this structure, never as filter text: a client never writes into ffmpeg's filter graph.
 *
 *   filters (Lavalink v4's field names)       ffmpeg
 *   equalizer  [{band 0–14, gain -0.25–1}]    equalizer (peaking, one octave wide) per band ≠ 0;
 *                                             band factor 1 + 4·gain (-0.25 mute at -30 dB, 0.25 double)
 *   timescale  {speed, pitch, rate}           asetrate (pitch·rate) + aresample + atempo (speed/pitch)
 *   tremolo    {frequency, depth}             tremolo
 *   vibrato    {frequency, depth}             vibrato
 *   rotation   {rotationHz}                   apulsator (sine pan, left and right in antiphase)
 *   channelMix {leftToLeft, leftToRight, rightToLeft, rightToRight}   pan
 *   lowPass    {smoothing}                    one-pole lowpass at lavaplayer's smoothing's cut-off
 *   gain                                      volume (last)
 *
 * Every chain starts by converting to 48 kHz stereo float, so each filter sees the same input.
 */

/** Lavalink's 15 equalizer bands, Hz. */
export const EQUALIZER_BANDS = [25, 40, 63, 100, 160, 250, 400, 630, 1000, 1600, 2500, 4000, 6300, 10000, 16000] as const;

export interface AudioFilters {
  equalizer?: { band: number; gain: number }[];
  timescale?: { speed?: number; pitch?: number; rate?: number };
  tremolo?: { frequency?: number; depth?: number };
  vibrato?: { frequency?: number; depth?: number };
  rotation?: { rotationHz?: number };
  channelMix?: { leftToLeft?: number; leftToRight?: number; rightToLeft?: number; rightToRight?: number };
  lowPass?: { smoothing?: number };
}

/** What a play does to its PCM: a linear gain (1: none) and filters. */
export interface Sound {
  gain?: number;
  filters?: AudioFilters;
}

/** The filters this module applies, in Lavalink's names (`volume` is the gain). */
export const FILTER_NAMES = ['volume', 'equalizer', 'timescale', 'tremolo', 'vibrato', 'rotation', 'channelMix', 'lowPass'] as const;

export class FilterError extends Error {
  override name = 'FilterError';
}

const SAMPLE_RATE = 48_000;
/** Timescale factors outside this range are refused (ffmpeg's resampling and tempo stay sound). */
const TIMESCALE_MIN = 0.1;
const TIMESCALE_MAX = 10;
/** A muted equalizer band, in dB (a factor of 0 has no dB; a deeper peaking cut spills octaves wide). */
const MUTED_DB = -30;

function objectOf(value: unknown, name: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new FilterError(`${name === '' ? 'filters' : `filters.${name}`} must be a JSON object`);
  return value as Record<string, unknown>;
}

function numberIn(o: Record<string, unknown>, name: string, key: string, min: number, max: number, minOpen = false): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v > max || (minOpen ? v <= min : v < min)) {
    throw new FilterError(`filters.${name}.${key} must be a number ${minOpen ? 'above' : 'from'} ${min} ${minOpen ? 'and at most' : 'to'} ${max}`);
  }
  return v;
}

function only<T extends object>(fields: T): T | undefined {
  const kept = Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)) as T;
  return Object.keys(kept).length > 0 ? kept : undefined;
}

/**
 * Checks filters field by field (a FilterError says which). Names this module does not know are
 * refused by the caller, which knows its protocol; here they are an error too.
 */
export function parseFilters(value: unknown): AudioFilters {
  const o = objectOf(value, '');
  const out: AudioFilters = {};
  for (const [name, raw] of Object.entries(o)) {
    if (raw === null || raw === undefined) continue;
    switch (name) {
      case 'equalizer': {
        if (!Array.isArray(raw)) throw new FilterError('filters.equalizer must be an array of {band, gain}');
        if (raw.length > EQUALIZER_BANDS.length) throw new FilterError(`filters.equalizer has at most ${EQUALIZER_BANDS.length} bands`);
        const bands = raw.map((b) => {
          const e = objectOf(b, 'equalizer[]');
          if (!Number.isInteger(e.band) || (e.band as number) < 0 || (e.band as number) >= EQUALIZER_BANDS.length) throw new FilterError(`filters.equalizer[].band must be an integer from 0 to ${EQUALIZER_BANDS.length - 1}`);
          return { band: e.band as number, gain: numberIn(e, 'equalizer[]', 'gain', -0.25, 1) ?? 0 };
        });
        if (bands.length > 0) out.equalizer = bands;
        break;
      }
      case 'timescale': {
        const t = objectOf(raw, name);
        const kept = only({ speed: numberIn(t, name, 'speed', TIMESCALE_MIN, TIMESCALE_MAX), pitch: numberIn(t, name, 'pitch', TIMESCALE_MIN, TIMESCALE_MAX), rate: numberIn(t, name, 'rate', TIMESCALE_MIN, TIMESCALE_MAX) });
        if (kept) out.timescale = kept;
        break;
      }
      case 'tremolo':
      case 'vibrato': {
        const t = objectOf(raw, name);
        const kept = only({ frequency: numberIn(t, name, 'frequency', 0, name === 'vibrato' ? 14 : 20_000, true), depth: numberIn(t, name, 'depth', 0, 1, true) });
        if (kept) out[name] = kept;
        break;
      }
      case 'rotation': {
        const t = objectOf(raw, name);
        const kept = only({ rotationHz: numberIn(t, name, 'rotationHz', 0, 100) });
        if (kept) out.rotation = kept;
        break;
      }
      case 'channelMix': {
        const t = objectOf(raw, name);
        const kept = only({
          leftToLeft: numberIn(t, name, 'leftToLeft', 0, 1),
          leftToRight: numberIn(t, name, 'leftToRight', 0, 1),
          rightToLeft: numberIn(t, name, 'rightToLeft', 0, 1),
          rightToRight: numberIn(t, name, 'rightToRight', 0, 1),
        });
        if (kept) out.channelMix = kept;
        break;
      }
      case 'lowPass': {
        const t = objectOf(raw, name);
        const kept = only({ smoothing: numberIn(t, name, 'smoothing', 0, 1000) });
        if (kept) out.lowPass = kept;
        break;
      }
      default:
        throw new FilterError(`filter "${name}" is not supported (supported: ${FILTER_NAMES.join(', ')})`);
    }
  }
  return out;
}

const num = (v: number) => String(Number(v.toPrecision(8)));

/** atempo takes 0.5 to 2 per instance in older ffmpeg: a chain of them for any factor. */
function atempo(factor: number): string[] {
  const out: string[] = [];
  let left = factor;
  while (left > 2) {
    out.push('atempo=2');
    left /= 2;
  }
  while (left < 0.5) {
    out.push('atempo=0.5');
    left /= 0.5;
  }
  if (Math.abs(left - 1) > 1e-9) out.push(`atempo=${num(left)}`);
  return out;
}

/** The ffmpeg `-af` value for `sound`, or undefined when it changes nothing. */
export function filterChain(sound: Sound): string | undefined {
  const f = sound.filters ?? {};
  const steps: string[] = [];
  for (const { band, gain } of f.equalizer ?? []) {
    if (gain === 0) continue;
    const factor = 1 + 4 * gain;
    const db = factor <= 0 ? MUTED_DB : Math.max(MUTED_DB, 20 * Math.log10(factor));
    steps.push(`equalizer=f=${EQUALIZER_BANDS[band]}:t=o:w=1:g=${num(db)}`);
  }
  if (f.timescale) {
    const { speed = 1, pitch = 1, rate = 1 } = f.timescale;
    // asetrate plays faster and higher by k; atempo then sets the tempo alone.
    const k = pitch * rate;
    if (Math.abs(k - 1) > 1e-9) steps.push(`asetrate=${Math.round(SAMPLE_RATE * k)}`, `aresample=${SAMPLE_RATE}`);
    steps.push(...atempo(speed / pitch));
  }
  if (f.tremolo) steps.push(`tremolo=f=${num(Math.max(0.1, f.tremolo.frequency ?? 2))}:d=${num(f.tremolo.depth ?? 0.5)}`);
  if (f.vibrato) steps.push(`vibrato=f=${num(Math.max(0.1, f.vibrato.frequency ?? 2))}:d=${num(f.vibrato.depth ?? 0.5)}`);
  if (f.rotation && (f.rotation.rotationHz ?? 0) > 0) steps.push(`apulsator=mode=sine:hz=${num(Math.max(0.01, f.rotation.rotationHz!))}:amount=1:offset_l=0:offset_r=0.5`);
  if (f.channelMix) {
    const { leftToLeft = 1, leftToRight = 0, rightToLeft = 0, rightToRight = 1 } = f.channelMix;
    steps.push(`pan=stereo|c0=${num(leftToLeft)}*c0+${num(rightToLeft)}*c1|c1=${num(leftToRight)}*c0+${num(rightToRight)}*c1`);
  }
  if (f.lowPass && (f.lowPass.smoothing ?? 20) > 1) {
    // lavaplayer smooths y += (x - y) / smoothing: a one-pole lowpass with this cut-off.
    const smoothing = f.lowPass.smoothing ?? 20;
    const cutoff = (-SAMPLE_RATE / (2 * Math.PI)) * Math.log(1 - 1 / smoothing);
    steps.push(`lowpass=f=${num(cutoff)}:p=1`);
  }
  const gain = sound.gain ?? 1;
  if (gain !== 1) steps.push(`volume=${num(gain)}`);
  if (steps.length === 0) return undefined;
  return [`aformat=sample_fmts=fltp:sample_rates=${SAMPLE_RATE}:channel_layouts=stereo`, ...steps].join(',');
}

/** How much source time one second of output plays (the position's pace): timescale's speed × rate. */
export function playbackRate(filters: AudioFilters | undefined): number {
  const t = filters?.timescale;
  return t ? (t.speed ?? 1) * (t.rate ?? 1) : 1;
}
