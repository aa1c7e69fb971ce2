/**
 * Opus encoder thread of the engine. It holds the encoders of the sessions assigned to it, each
 * for the whole life of its play (Opus encoders carry state from frame to frame: a frame encoded
 * by another instance clicks), and turns batches of 20 ms s16le stereo PCM frames into finished
 * wire frames (`u32be length · padded id · Opus packet`, the layout of src/shared/protocol.ts),
 * so the engine's main thread only writes them out.
 *
 * One batch is one ffmpeg read (several frames): one message each way per read, not per frame.
 * The messages of both sides are declared here; the main side imports them as types only.
 */
import { parentPort } from 'node:worker_threads';
import opus from '@discordjs/opus';
import { CHANNELS, MAX_OPUS_PACKET_BYTES, PCM_FRAME_BYTES, SAMPLE_RATE } from '../shared/audio.js';
import { FRAME_HEADER_BYTES, writeFrameHeader } from '../shared/protocol.js';

/** OPUS_SET_COMPLEXITY_REQUEST from opus_defines.h. */
export const OPUS_SET_COMPLEXITY = 4010;

export type EncoderRequest =
  /** A new encoder for one play; `handle` is unique per play, never reused. */
  | { op: 'open'; handle: number; paddedId: string; bitrate: number; complexity: number }
  /** Whole PCM frames (a multiple of PCM_FRAME_BYTES), transferred. */
  | { op: 'encode'; handle: number; pcm: ArrayBuffer }
  | { op: 'close'; handle: number };

export type EncoderReply =
  /** Wire frames back to back, transferred; `count` frames for the batch's `count` PCM frames. */
  | { op: 'encoded'; handle: number; frames: ArrayBuffer; bytes: number; count: number }
  | { op: 'failed'; handle: number; message: string };

interface Entry {
  encoder: opus.OpusEncoder;
  paddedId: string;
}

const port = parentPort;
if (port) {
  const encoders = new Map<number, Entry>();
  /** Frames of one batch are assembled here at their worst-case size, then copied out exactly. */
  let scratch = Buffer.allocUnsafeSlow(0);
  const reply = (message: EncoderReply, transfer: ArrayBuffer[] = []) => port.postMessage(message, transfer);

  port.on('message', (msg: EncoderRequest) => {
    switch (msg.op) {
      case 'open': {
        try {
          const encoder = new opus.OpusEncoder(SAMPLE_RATE, CHANNELS);
          encoder.setBitrate(msg.bitrate);
          encoder.applyEncoderCTL(OPUS_SET_COMPLEXITY, msg.complexity);
          encoders.set(msg.handle, { encoder, paddedId: msg.paddedId });
        } catch (err) {
          reply({ op: 'failed', handle: msg.handle, message: `cannot create Opus encoder: ${(err as Error).message}` });
        }
        return;
      }
      case 'encode': {
        // A batch for a play closed meanwhile is dropped: nobody waits for it.
        const entry = encoders.get(msg.handle);
        if (!entry) return;
        try {
          const count = msg.pcm.byteLength / PCM_FRAME_BYTES;
          const worstCase = count * (FRAME_HEADER_BYTES + MAX_OPUS_PACKET_BYTES);
          if (scratch.length < worstCase) scratch = Buffer.allocUnsafeSlow(worstCase);
          let bytes = 0;
          for (let i = 0; i < count; i++) {
            const packet = entry.encoder.encode(Buffer.from(msg.pcm, i * PCM_FRAME_BYTES, PCM_FRAME_BYTES));
            writeFrameHeader(scratch, bytes, entry.paddedId, packet.length);
            packet.copy(scratch, bytes + FRAME_HEADER_BYTES);
            bytes += FRAME_HEADER_BYTES + packet.length;
          }
          // An exact-size copy: the engine may hold these frames for seconds (paused, no gateway).
          const frames = new ArrayBuffer(bytes);
          scratch.copy(new Uint8Array(frames), 0, 0, bytes);
          reply({ op: 'encoded', handle: msg.handle, frames, bytes, count }, [frames]);
        } catch (err) {
          encoders.delete(msg.handle);
          reply({ op: 'failed', handle: msg.handle, message: `Opus encoding failed: ${(err as Error).message}` });
        }
        return;
      }
      case 'close':
        // The native encoder is freed when the garbage collector takes it.
        encoders.delete(msg.handle);
        return;
    }
  });
}
