/**
 * The gateway's session worker: a piscina task file. Each task is one session slot; up to
 * CHORUS_SESSIONS_PER_THREAD slots share a thread, its scheduler and its egress port. A slot is
 * started ahead of need (pre-warmed), waits for attach() over comlink, then paces its session
 * until the session ends; the task's result says where seq and timestamp continue. A slot with
 * a Discord voice connection lives on between tracks (the bot stays in its channel) until the
 * voice is left or the session closed. A session can leave its slot mid-track for one on another
 * thread (handOff): the slot then sends nothing more and ends on close().
 */
import { MessageChannel, threadId, type MessagePort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import * as Comlink from 'comlink';
import { Ring } from '../shared/ring.js';
import { Doorbell } from '../shared/doorbell.js';
import { maxPayloadBytes, PCM_FRAME_BYTES } from '../shared/audio.js';
import type {
  AttachResult,
  EgressMessage,
  PlayerHandOff,
  PlayerStatus,
  SessionInit,
  SlotApi,
  SlotResult,
  SlotTask,
  VoiceEvent,
  VoiceServerState,
} from '../shared/worker-messages.js';
import { EgressBatch } from './egress-batch.js';
import { WakeScheduler } from './scheduler.js';
import { SessionPlayer, type PlayerHost } from './session-player.js';
import type { VoiceLink } from './voice-link.js';

/**
 * Session clocks on one thread start on this grid (see PlayerHost.clockStart): a start or a
 * resume waits at most this long, and the thread wakes at most FRAME_MS / CLOCK_GRID_MS times
 * a frame whatever its number of sessions.
 */
const CLOCK_GRID_MS = 5;

/** What the slots of one thread share. Created with the thread's first attach. */
class ThreadContext implements PlayerHost {
  readonly batch: EgressBatch;
  readonly scratch = new Uint8Array(PCM_FRAME_BYTES);
  readonly scheduler: WakeScheduler;
  private readonly epoch = performance.now();
  /** Main's end of the egress channel, until the first attach hands it over. */
  mainEnd: MessagePort | undefined;
  /** The slots attached on this thread: whether it may sleep between frames is theirs to say. */
  readonly slots = new Set<WorkerSlot>();

  constructor(
    private readonly port: MessagePort,
    bell: Doorbell,
  ) {
    this.batch = new EgressBatch(port);
    const mayBlock = () => {
      for (const slot of this.slots) if (slot.needsEventLoop) return false;
      return true;
    };
    this.scheduler = new WakeScheduler(() => this.batch.flush(), undefined, { bell, mayBlock });
  }

  static create(): ThreadContext {
    const { port1, port2 } = new MessageChannel();
    const ctx = new ThreadContext(port1, doorbell);
    ctx.mainEnd = port2;
    return ctx;
  }

  postStatus(sid: number, status: PlayerStatus, reason?: string): void {
    // Frames gathered before this change go first, so listeners hear them before the event.
    this.batch.flush();
    const message: EgressMessage = reason === undefined ? { kind: 'state', sid, status } : { kind: 'state', sid, status, reason };
    this.port.postMessage(message);
  }

  postVoice(sid: number, voice: VoiceEvent): void {
    this.batch.flush();
    const message: EgressMessage = { kind: 'voice', sid, voice };
    this.port.postMessage(message);
  }

  now(): number {
    return performance.now();
  }

  readonly timeOrigin = performance.timeOrigin;

  clockStart(now: number): number {
    return this.epoch + Math.ceil((now - this.epoch) / CLOCK_GRID_MS) * CLOCK_GRID_MS;
  }
}

let thread: ThreadContext | undefined;
/** This thread's doorbell: every slot on it hands the same one to main. */
const doorbell = new Doorbell();

/**
 * @discordjs/voice and DAVE's native addon are loaded by the first voice state a thread gets, not
 * at its start: most sessions never have one, and loading them costs a thread ~4 MB and most of
 * its boot time.
 */
let voiceModule: Promise<typeof import('./voice-link.js')> | undefined;
const loadVoice = () => (voiceModule ??= import('./voice-link.js'));

class WorkerSlot {
  private player: SessionPlayer | undefined;
  private voice: VoiceLink | undefined;
  private voiceUdpSilenceMs = 0;
  /** Voice states being taken while the voice module loads. */
  private voiceLoads = 0;
  /** No track under way (finished, failed or stopped): the slot stays only for its voice. */
  private trackDone = false;
  /** The session has moved to another thread's slot: this one only waits for close(). */
  private handedOff = false;
  private finished = false;
  private finish!: (result: SlotResult) => void;
  readonly ended = new Promise<SlotResult>((resolve) => {
    this.finish = resolve;
  });

  readonly api: SlotApi = {
    ready: () => doorbell.memory,
    attach: (init) => this.attach(init),
    reset: (paused) => {
      this.trackDone = false;
      return this.run((p) => p.reset(paused));
    },
    pause: () => this.run((p) => p.pause()),
    resume: () => this.run((p) => p.resume()),
    stop: () => {
      this.trackDone = true;
      return this.run((p) => p.stop());
    },
    endOfStream: () => this.run((p) => p.markEndOfStream()),
    spliceAt: (lead) => this.need().spliceAt(lead),
    spliceTo: (record) => this.run((p) => p.spliceTo(record)),
    cancelSplice: () => this.run((p) => p.cancelSplice()),
    setListeners: (count) => this.run((p) => p.setListeners(count)),
    addRtpSink: (target) => {
      const info = this.need().rtp.add(target);
      this.run((p) => p.reconsider());
      return info;
    },
    removeRtpSink: (target) => {
      const removed = this.need().rtp.remove(target);
      this.run((p) => p.reconsider());
      return removed;
    },
    setVoice: (state) => this.setVoice(state),
    leaveVoice: () => this.leaveVoice(),
    stats: () => ({ ...this.need().stats(), threadWakesSlept: thread!.scheduler.sleptWakes, threadId }),
    handOff: () => this.handOff(),
    takeOver: (handOff) => this.run((p) => p.takeOver(handOff)),
    close: () => this.close(),
    crash: (kind) => {
      if (kind === 'thread') {
        setTimeout(() => {
          throw new Error('debug: worker thread crash requested');
        });
      } else {
        const p = this.need();
        p.requestCrash();
        thread!.scheduler.schedule(p, performance.now());
      }
    },
  };

  private attach(init: SessionInit): AttachResult {
    if (this.player) throw new Error('slot already attached');
    thread ??= ThreadContext.create();
    const ctx = thread;
    ctx.slots.add(this);
    this.voiceUdpSilenceMs = init.voiceUdpSilenceMs;
    this.player = new SessionPlayer(init, new Ring(init.ring), maxPayloadBytes(init.format), ctx, () => {
      this.trackDone = true;
      if (!this.voice) this.settle();
    });
    const egress = ctx.mainEnd;
    ctx.mainEnd = undefined;
    return egress ? Comlink.transfer({ threadId, egress }, [egress]) : { threadId };
  }

  /**
   * Whether this slot's thread must go back to its event loop between frames: a Discord voice
   * connection (its WebSocket, UDP and timers live there), or an RTP target whose socket is
   * still connecting (the sends before that go through an address lookup on the next tick).
   */
  get needsEventLoop(): boolean {
    return this.voiceLoads > 0 || this.voice !== undefined || (this.player !== undefined && !this.player.rtp.connected);
  }

  private need(): SessionPlayer {
    if (this.handedOff) throw new Error('the session has moved to another thread');
    if (!this.player) throw new Error('slot has no session attached');
    return this.player;
  }

  private handOff(): PlayerHandOff | undefined {
    const p = this.need();
    if (this.voiceLoads > 0 || this.voice) return undefined;
    const state = p.handOff();
    if (!state) return undefined;
    // Comlink calls run between wakes: the player has sent every frame due so far, and the
    // thread's batch went out with its last wake.
    thread!.scheduler.schedule(p, Infinity);
    thread!.slots.delete(this);
    p.rtp.close();
    this.handedOff = true;
    return state;
  }

  /** Applies a control and reschedules the player at the time it returns. */
  private run(control: (p: SessionPlayer) => number): PlayerStatus {
    const p = this.need();
    thread!.scheduler.schedule(p, control(p));
    return p.current;
  }

  private async setVoice(state: VoiceServerState): Promise<VoiceEvent> {
    this.need();
    this.voiceLoads++;
    let VoiceLink: typeof import('./voice-link.js').VoiceLink;
    try {
      ({ VoiceLink } = await loadVoice());
    } finally {
      this.voiceLoads--;
    }
    // Another voice state may have come in while the module loaded, or the slot ended.
    if (this.finished) throw new Error('session slot has ended');
    const p = this.need();
    if (this.voice) return this.voice.update(state);
    const sid = p.sid;
    const link = new VoiceLink(state, this.voiceUdpSilenceMs, (event) => {
      if (this.voice !== link) return;
      thread!.postVoice(sid, event);
      this.run((player) => player.voiceChanged(event.reason));
    });
    this.voice = link;
    p.voice = link;
    this.run((player) => player.voiceChanged());
    return { status: link.status };
  }

  private leaveVoice(): boolean {
    const link = this.voice;
    if (!link) return false;
    this.voice = undefined;
    link.destroy();
    const p = this.need();
    p.voice = undefined;
    if (this.trackDone) this.settle();
    else this.run((player) => player.voiceChanged());
    return true;
  }

  private close(): void {
    this.voice?.destroy();
    this.voice = undefined;
    if (this.player) {
      this.player.voice = undefined;
      thread!.scheduler.schedule(this.player, Infinity);
    }
    this.settle();
  }

  private settle(): void {
    if (this.finished) return;
    this.finished = true;
    thread?.slots.delete(this);
    const p = this.player;
    p?.rtp.close();
    this.finish({ nextSeq: p?.nextSeq ?? 0, nextTimestamp: p?.nextTimestamp ?? 0 });
  }
}

export default async function sessionSlot(task: SlotTask): Promise<SlotResult> {
  const slot = new WorkerSlot();
  Comlink.expose(slot.api, task.port as unknown as Comlink.Endpoint);
  try {
    return await slot.ended;
  } finally {
    task.port.close();
  }
}
