/**
 * Plays a session's queue (queue.ts) on the gateway: starts items, advances when one ends (or
 * fails), and keeps the engine's follower (the next item, queued in the engine with
 * POST /session/:id/next) in step with the queue, so that an item that ends by itself is
 * followed by the next with no gap. Every change of the queue is a `queue` event to the
 * session's listeners.
 *
 * Operations of one queue run one at a time, in order, and each acts on the queue as it is when
 * it runs: a `next` that races the end of an item goes on from whatever the listeners hear then,
 * and an advance finds the session already playing (after a next or a jump) and does nothing.
 *
 * yt-dlp lookups (a site item's media URL before it plays or follows, an add's identifiers) are
 * cancelled, their process killed, as soon as what they are for is not wanted: a stop, a clear,
 * the session forgotten, or a next/previous/jump/remove arriving while the item's URL is looked
 * up. A cancelled lookup ends quietly; a failed or timed-out one is a `queue` `failed` event
 * naming the item, which is then skipped as an item that fails to play is.
 */
import type { ListenerEvent } from '../../shared/listener-protocol.js';
import { logger } from '../../shared/log.js';
import type { QueueChange, QueueCommand, QueueEvent, QueueItem, QueueState } from '../../shared/queue.js';
import type { SessionSummary } from '../../shared/gateway-api.js';
import { loadTracks, YTDLP_SOURCE_NAMES, type LavalinkTrack, type TrackLoader } from '../lavalink/load-tracks.js';
import { LONG_MAX } from '../lavalink/track-codec.js';
import { YtDlpError } from '../lavalink/yt-dlp.js';
import { HttpError } from '../http-kit.js';
import type { Gateway } from './gateway.js';
import { Queue, type NewItem } from './queue.js';
import type { GatewaySession, Track, TrackObserver } from './session.js';

const log = logger('gateway.queue');
/** Identifiers of one add resolved at once (each may run ffmpeg to read its tags). */
const RESOLVE_CONCURRENCY = 4;
/** How often sessions with a follower's frames in their ring are checked for the change (a frame). */
const BOUNDARY_POLL_MS = 20;

/** What a queue is told after each change: the state a store keeps. */
export type QueueChangeHook = (sessionId: string, state: QueueState) => void;

/** An add whose lookups were cancelled (a stop, a clear, its client gone): nothing was added. */
export class AddCancelled extends HttpError {
  constructor() {
    super(409, 'the add was cancelled: the session was stopped or its queue cleared while its tracks were looked up');
  }
}

export class QueuePlayers {
  private readonly players = new Map<string, QueuePlayer>();
  /** Sessions with a follower's frames in their ring, watched for when the listeners reach them. */
  private readonly watched = new Set<GatewaySession>();
  private poll: NodeJS.Timeout | undefined;
  /** Called after every change of any queue (a store writes it behind). */
  onChange: QueueChangeHook | undefined;

  constructor(
    private readonly gateway: Gateway,
    private readonly loader: TrackLoader,
  ) {}

  /** The queue of session `id`; made (with its session) when `create`, else 404 if it has none. */
  get(id: string, create: boolean): QueuePlayer {
    // An add makes the session first: a stop of it cancels the add's lookups.
    if (create) this.gateway.session(id, true);
    const existing = this.players.get(id);
    if (existing) return existing;
    if (!create) {
      this.gateway.session(id, false);
      throw new HttpError(404, `session ${JSON.stringify(id)} has no queue: add to it first`);
    }
    const player = new QueuePlayer(id, this.gateway, this.loader, (state) => this.onChange?.(id, state), (session) => this.watch(session));
    this.players.set(id, player);
    return player;
  }

  private watch(session: GatewaySession): void {
    this.watched.add(session);
    this.poll ??= setInterval(() => {
      for (const s of this.watched) {
        s.crossBoundary();
        if (!s.boundaryPending) this.watched.delete(s);
      }
      if (this.watched.size === 0) {
        clearInterval(this.poll);
        this.poll = undefined;
      }
    }, BOUNDARY_POLL_MS);
  }

  close(): void {
    for (const player of this.players.values()) player.ended();
    clearInterval(this.poll);
    this.poll = undefined;
    this.watched.clear();
  }

  /** The plain state of session `id`'s queue; undefined when it has none. */
  snapshot(id: string): QueueState | undefined {
    return this.players.get(id)?.queue.snapshot();
  }

  /** Session ids that have a queue. */
  ids(): string[] {
    return [...this.players.keys()];
  }

  /** Puts a saved queue back (nothing plays until asked). */
  restore(id: string, state: QueueState): QueuePlayer {
    const player = this.get(id, true);
    player.queue.restore(state);
    return player;
  }

  /**
   * Runs a command from the HTTP API or a listener; answers with the queue after it. `gone`: the
   * asker went away (an add's lookups are cancelled then).
   */
  async run(id: string, command: QueueCommand, gone?: AbortSignal): Promise<QueueState> {
    const player = this.get(id, command.op === 'add');
    await player.execute(command, gone);
    return player.queue.snapshot();
  }

  /** Adds what each session's queue plays now (title, author, artwork) to the sessions' summaries. */
  describe(summary: SessionSummary): SessionSummary {
    const item = this.players.get(summary.id)?.nowPlaying();
    if (!item) return summary;
    return { ...summary, title: item.title, author: item.author, ...(item.artworkUrl ? { artworkUrl: item.artworkUrl } : {}) };
  }
}

export class QueuePlayer implements TrackObserver {
  readonly queue = new Queue();
  private chain: Promise<unknown> = Promise.resolve();
  private bound: GatewaySession | undefined;
  /** The follower the engine plays now: ahead of the listeners while its frames wait in the ring. */
  private engineItem: number | undefined;
  /** The item the queue last started (or the listeners reached): what an `error` is about. */
  private startedItem: number | undefined;
  /** Items that failed in a row: past the queue's length, advancing stops. */
  private failures = 0;
  /** The media URL lookup of the item being started, and that item's id. */
  private playLookup: { controller: AbortController; item: number } | undefined;
  /** The media URL lookup of a follower being queued in the engine. */
  private followLookup: AbortController | undefined;
  /** The identifier lookups of adds under way. */
  private readonly addLookups = new Set<AbortController>();
  /** Items whose lookup as a follower failed: not asked again until their turn to play. */
  private readonly unfollowable = new Set<number>();

  constructor(
    readonly id: string,
    private readonly gateway: Gateway,
    private readonly loader: TrackLoader,
    private readonly changed: (state: QueueState) => void,
    private readonly watch: (session: GatewaySession) => void,
  ) {
    this.queue.onChange = (change, state) => {
      this.tell({ type: 'queue', session: id, change, queue: state });
      this.changed(state);
    };
    this.session();
  }

  get lookingUp(): boolean {
    return this.playLookup !== undefined || this.followLookup !== undefined || this.addLookups.size > 0;
  }

  /** The session was stopped or forgotten (or the gateway closes): every lookup is cancelled. */
  ended(): void {
    this.cancelPlayLookups();
    for (const lookup of this.addLookups) lookup.abort();
  }

  /** What was to play or follow is not any more: its lookups are cancelled. */
  private cancelPlayLookups(): void {
    this.playLookup?.controller.abort();
    this.followLookup?.abort();
  }

  /** The item the listeners hear, if the queue started what the session plays. */
  nowPlaying(): QueueItem | undefined {
    const item = this.session()?.track?.item;
    if (item === undefined) return undefined;
    return this.queue.item(this.queue.indexOf(item));
  }

  /** The session's position in the item heard (seconds). */
  position(): number | undefined {
    return this.nowPlaying() === undefined ? undefined : this.session()?.position;
  }

  async execute(command: QueueCommand, gone?: AbortSignal): Promise<void> {
    // What these change is at once not what the lookups under way are for: they end now, not
    // when the command's turn comes (behind a lookup that may take CHORUS_YTDLP_TIMEOUT_MS).
    if (command.op === 'next' || command.op === 'previous' || command.op === 'jump') this.cancelPlayLookups();
    else if (command.op === 'clear') this.ended();
    else if (command.op === 'remove') {
      if (this.playLookup && this.queue.item(command.index)?.id === this.playLookup.item) this.playLookup.controller.abort();
      this.followLookup?.abort();
    } else if (command.op !== 'add') this.followLookup?.abort();
    switch (command.op) {
      case 'add': {
        // Resolved before taking the queue's turn: tags may take a while to read.
        const items = await this.resolveAdd(command.tracks, command.format ?? 'opus', gone);
        return this.run(async () => {
          const first = this.queue.add(items, command.at);
          if (!this.session()?.active) await this.start(first, 'jump');
          else await this.refreshFollower();
        });
      }
      case 'next':
        return this.run(async () => {
          const to = this.queue.after();
          if (to === undefined) throw new HttpError(409, 'there is no next item (the last one plays and repeat is off)');
          await this.start(to, 'next');
        });
      case 'previous':
        return this.run(async () => {
          const to = this.queue.before();
          if (to === undefined) throw new HttpError(409, 'there is no previous item (the first one plays and repeat is off)');
          await this.start(to, 'previous');
        });
      case 'jump':
        return this.run(() => this.start(command.index, 'jump'));
      case 'remove':
        return this.run(async () => {
          const item = this.queue.item(command.index);
          const playing = item !== undefined && this.session()?.active === true && this.session()?.track?.item === item.id;
          this.queue.remove(command.index);
          if (!playing) return this.refreshFollower();
          // The item heard is gone: what followed it plays now.
          if (command.index < this.queue.length) return this.start(command.index, 'advance');
          if (this.queue.repeat === 'queue' && this.queue.length > 0) return this.start(0, 'advance');
          // Its own stop: the adds under way go on.
          await this.gateway.stop(this.id, undefined, this);
        });
      case 'move':
        return this.run(async () => {
          this.queue.move(command.from, command.to);
          await this.refreshFollower();
        });
      case 'clear':
        return this.run(async () => {
          this.queue.clear(this.nowPlaying() ? this.queue.index : undefined);
          await this.refreshFollower();
        });
      case 'shuffle':
        return this.run(async () => {
          this.queue.shuffle();
          await this.refreshFollower();
        });
      case 'repeat':
        return this.run(async () => {
          this.queue.setRepeat(command.mode);
          await this.refreshFollower();
        });
    }
  }

  // ---- what the session says (TrackObserver) ----

  event(event: ListenerEvent): void {
    const session = this.bound;
    if (!session) return;
    if (event.type === 'ready') {
      const item = session.track?.item;
      if (item === undefined) this.startedItem = undefined;
      void this.run(() => this.refreshFollower()).catch(() => undefined);
    } else if (event.type === 'state' && event.state === 'finished') {
      const item = session.track?.item;
      if (item !== undefined) void this.run(() => this.advance(item, false)).catch(() => undefined);
    } else if (event.type === 'error') {
      const item = this.startedItem;
      if (item !== undefined) void this.run(() => this.advance(item, true)).catch(() => undefined);
    }
  }

  followerStarted(track: Track): void {
    this.engineItem = track.item;
    if (this.bound) this.watch(this.bound);
    // The engine plays the follower now: the item after it is to follow it.
    void this.run(() => this.refreshFollower()).catch(() => undefined);
  }

  trackChanged(track: Track): void {
    if (track.item === undefined) return;
    this.startedItem = track.item;
    this.failures = 0;
    const index = this.queue.indexOf(track.item);
    if (index >= 0) this.queue.select(index, 'advance');
  }

  followerFailed(track: Track, reason: string): void {
    log.warn('the next item could not be queued in the engine; it is tried again when the current one ends', { session: this.id, url: track.url, reason });
    this.tell({ type: 'queue', session: this.id, change: 'failed', queue: this.queue.snapshot(), reason, ...(track.item === undefined ? {} : { item: track.item }) });
  }

  /** An item's media URL could not be looked up: the listeners are told which and why. */
  private lookupFailed(item: QueueItem, reason: string): void {
    log.warn('the media URL of a queue item could not be looked up', { session: this.id, item: item.id, reason });
    const named = `item ${item.id} (${JSON.stringify(item.title)}) could not be looked up: ${reason}`;
    this.tell({ type: 'queue', session: this.id, change: 'failed', queue: this.queue.snapshot(), reason: named, item: item.id });
  }

  // ---- playing ----

  /** Runs queue operations one at a time, in order. */
  private run<T>(op: () => Promise<T>): Promise<T> {
    const result = this.chain.then(op, op);
    this.chain = result.catch(() => undefined);
    return result;
  }

  /** The session now (the gateway may have made a new one for the id), hearing this queue. */
  private session(): GatewaySession | undefined {
    let session: GatewaySession;
    try {
      session = this.gateway.session(this.id, false);
    } catch {
      return undefined;
    }
    if (session !== this.bound) {
      if (this.bound?.trackObserver === this) this.bound.trackObserver = undefined;
      this.bound = session;
      session.trackObserver = this;
    }
    return session;
  }

  private async start(index: number, change: QueueChange): Promise<void> {
    // A start asked for (not an advance) begins a new count of items failed in a row.
    if (change !== 'advance') this.failures = 0;
    this.queue.select(index, change);
    const item = this.queue.item(index)!;
    this.startedItem = item.id;
    this.engineItem = undefined;
    this.unfollowable.delete(item.id);
    this.session();
    const lookup = { controller: new AbortController(), item: item.id };
    this.playLookup = lookup;
    let url: string | undefined;
    try {
      url = await this.playUrl(item, lookup.controller.signal);
    } catch (err) {
      if (!(err instanceof YtDlpError)) throw err;
      this.lookupFailed(item, err.message);
      return this.skipFailed(index);
    } finally {
      if (this.playLookup === lookup) this.playLookup = undefined;
    }
    // Cancelled: what replaced it (a next, a jump, a stop) is the command that runs next.
    if (url === undefined) return;
    await this.gateway.play(this.id, url, item.format, 0, false, {}, item.id);
    this.session();
    // Asked at once, not at its ready: a short item may be all in the ring before then.
    await this.refreshFollower();
  }

  /** The item `id` ended by itself (or failed): the next plays, unless something else already does. */
  private async advance(id: number, failed: boolean): Promise<void> {
    const session = this.session();
    if (!session || session.active) return;
    const index = this.queue.indexOf(id);
    if (index < 0) return;
    const started = failed ? this.skipFailed(index) : this.startAfter(index);
    await started.catch((err: Error) => log.warn('queue item failed to start', { session: this.id, message: err.message }));
  }

  private async startAfter(index: number): Promise<void> {
    this.failures = 0;
    const next = this.queue.following(index);
    if (next !== undefined) await this.start(next, 'advance');
  }

  /** The item at `index` failed: the one after it plays, unless every item failed in a row. */
  private async skipFailed(index: number): Promise<void> {
    this.failures++;
    if (this.failures >= this.queue.length) {
      log.warn('every item of the queue failed in a row; stopping', { session: this.id });
      return;
    }
    // A failed item is not played again by repeat track.
    const next = index + 1 < this.queue.length ? index + 1 : this.queue.repeat === 'off' ? undefined : 0;
    if (next !== undefined) await this.start(next, 'advance');
  }

  /**
   * Puts in the engine, behind what it plays, the two items that are to come after it: the second
   * is asked for as soon as the first is queued, so a short item is followed in time too.
   */
  private async refreshFollower(): Promise<void> {
    const session = this.session();
    if (!session || !this.gateway.gapless || !session.active) return;
    const playing = session.boundaryPending ? this.engineItem : session.track?.item;
    if (playing === undefined) return;
    const at = this.queue.indexOf(playing);
    const first = at < 0 ? undefined : this.queue.following(at);
    const second = first === undefined ? undefined : this.queue.following(first);
    const want = [first, second].flatMap((i) => (i === undefined ? [] : [this.queue.item(i)!]));
    if (want.length === 0) {
      if (session.followers.length > 0) await this.gateway.unfollow(this.id);
      return;
    }
    const have = session.followers.map((f) => f.track.item);
    // From the first follower that differs (or that is one too many), everything is asked again.
    let from = want.findIndex((item, i) => have[i] !== item.id);
    if (from < 0 && have.length > want.length) from = 0;
    if (from < 0) return;
    const lookup = new AbortController();
    this.followLookup = lookup;
    try {
      for (let i = from; i < want.length; i++) {
        const item = want[i]!;
        // A follower whose lookup failed is tried again at its turn; nothing can follow it before.
        if (this.unfollowable.has(item.id)) return;
        let url: string | undefined;
        try {
          url = await this.playUrl(item, lookup.signal);
        } catch (err) {
          if (!(err instanceof YtDlpError)) throw err;
          this.unfollowable.add(item.id);
          this.lookupFailed(item, `${err.message}; it is tried again when the item before it ends`);
          return;
        }
        if (url === undefined) return;
        if (!(await this.gateway.follow(this.id, { url, format: item.format, startAt: 0, item: item.id }, i))) return;
      }
    } catch (err) {
      log.warn('could not queue the next item in the engine', { session: this.id, message: (err as Error).message });
    } finally {
      if (this.followLookup === lookup) this.followLookup = undefined;
    }
  }

  private tell(event: QueueEvent): void {
    this.session()?.broadcast(event);
  }

  /**
   * What the engine plays for an item: a site's media URL is asked of yt-dlp now (it expires).
   * Undefined when `signal` cancelled the lookup; a YtDlpError when it failed or timed out.
   */
  private async playUrl(item: QueueItem, signal: AbortSignal): Promise<string | undefined> {
    const ytDlp = this.loader.ytDlp;
    if (!ytDlp || !(YTDLP_SOURCE_NAMES as readonly string[]).includes(item.source)) return item.url;
    try {
      const url = await ytDlp.mediaUrl(item.url, signal);
      return signal.aborted ? undefined : url;
    } catch (err) {
      if (signal.aborted) return undefined;
      throw err;
    }
  }

  // ---- identifiers to items ----

  /** An add's identifiers to items, cancelled by a stop, a clear or `gone` (AddCancelled). */
  private async resolveAdd(tracks: string[], format: 'opus' | 'web', gone: AbortSignal | undefined): Promise<NewItem[]> {
    this.session();
    const lookup = new AbortController();
    const abort = () => lookup.abort();
    if (gone?.aborted) abort();
    gone?.addEventListener('abort', abort, { once: true });
    this.addLookups.add(lookup);
    let items: NewItem[] = [];
    try {
      items = await this.resolve(tracks, format, lookup.signal);
    } catch (err) {
      if (!lookup.signal.aborted) throw err;
    } finally {
      this.addLookups.delete(lookup);
      gone?.removeEventListener('abort', abort);
    }
    if (lookup.signal.aborted) throw new AddCancelled();
    return items;
  }

  private async resolve(tracks: string[], format: 'opus' | 'web', signal: AbortSignal): Promise<NewItem[]> {
    const lists: NewItem[][] = new Array(tracks.length);
    let next = 0;
    const worker = async () => {
      while (next < tracks.length && !signal.aborted) {
        const i = next++;
        lists[i] = await this.resolveOne(tracks[i]!, format, signal);
      }
    };
    await Promise.all(Array.from({ length: Math.min(RESOLVE_CONCURRENCY, tracks.length) }, worker));
    return lists.flat();
  }

  private async resolveOne(identifier: string, format: 'opus' | 'web', signal: AbortSignal): Promise<NewItem[]> {
    const result = await loadTracks(this.loader, identifier, signal);
    switch (result.loadType) {
      case 'track':
        return [itemOf(result.data, format)];
      case 'playlist':
        return result.data.tracks.map((t) => itemOf(t, format));
      case 'search':
        if (result.data.length === 0) throw new HttpError(404, `nothing found for ${JSON.stringify(identifier)}`);
        return [itemOf(result.data[0]!, format)];
      case 'empty':
        throw new HttpError(404, `nothing found for ${JSON.stringify(identifier)} (no such file, or no source takes it)`);
      case 'error':
        throw new HttpError(400, `${JSON.stringify(identifier)} cannot be played: ${result.data.message}`);
    }
  }
}

function itemOf(track: LavalinkTrack, format: 'opus' | 'web'): NewItem {
  const info = track.info;
  const item: NewItem = {
    url: info.uri ?? info.identifier,
    format,
    title: info.title,
    author: info.author,
    source: info.sourceName,
  };
  if (!info.isStream && BigInt(info.length) !== LONG_MAX) item.durationMs = info.length;
  if (info.artworkUrl) item.artworkUrl = info.artworkUrl;
  return item;
}
