/**
 * What is playing, measured from an AnalyserNode: the dominant frequency (peak bin, refined by a
 * parabola through its neighbours, so a 5.9 Hz bin still gives about ±1 Hz), the RMS level and the
 * power at a given frequency. Used by the spectrum view and by the browser tests' hook.
 */

export interface Analysis {
  /** Dominant frequency in Hz; 0 when the output is silent. */
  frequency: number;
  /** Peak level in dBFS of the spectrum. */
  peakDb: number;
  /** RMS of the waveform (full scale = 1). */
  rms: number;
}

/** Below this RMS the output counts as silence (about −66 dBFS). */
export const SILENCE_RMS = 0.0005;

export function analyse(analyser: AnalyserNode): Analysis {
  const wave = new Float32Array(analyser.fftSize);
  analyser.getFloatTimeDomainData(wave);
  let sum = 0;
  for (const v of wave) sum += v * v;
  const rms = Math.sqrt(sum / wave.length);

  const spectrum = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(spectrum);
  let peak = 1;
  for (let i = 2; i < spectrum.length - 1; i++) if (spectrum[i]! > spectrum[peak]!) peak = i;
  const a = spectrum[peak - 1]!;
  const b = spectrum[peak]!;
  const c = spectrum[peak + 1]!;
  const denom = a - 2 * b + c;
  const shift = Number.isFinite(denom) && denom !== 0 ? (0.5 * (a - c)) / denom : 0;
  const binHz = analyser.context.sampleRate / analyser.fftSize;
  return {
    frequency: rms < SILENCE_RMS ? 0 : (peak + Math.max(-0.5, Math.min(0.5, shift))) * binHz,
    peakDb: Number.isFinite(b) ? b : -Infinity,
    rms,
  };
}

/** Strongest level in dBFS within ±`widthHz` of `hz`. */
export function powerAt(analyser: AnalyserNode, hz: number, widthHz = 15): number {
  const spectrum = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(spectrum);
  const binHz = analyser.context.sampleRate / analyser.fftSize;
  const lo = Math.max(0, Math.floor((hz - widthHz) / binHz));
  const hi = Math.min(spectrum.length - 1, Math.ceil((hz + widthHz) / binHz));
  let best = -Infinity;
  for (let i = lo; i <= hi; i++) best = Math.max(best, spectrum[i]!);
  return best;
}
