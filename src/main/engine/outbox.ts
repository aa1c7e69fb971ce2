/**
 * A session's outgoing wire units in order: frames and the events between them. A growable
 * circular array (piscina's fixed-queue idea without the fixed part): the engine bounds it by
 * pausing the session's ffmpeg, not by refusing pushes, so nothing is ever dropped here.
 */
export class Outbox {
  private items: (Buffer | undefined)[] = new Array(64);
  private events: boolean[] = new Array(64);
  private head = 0;
  private count = 0;
  /** Frames (not events) held. */
  frames = 0;

  get length(): number {
    return this.count;
  }

  push(unit: Buffer, isEvent: boolean): void {
    if (this.count === this.items.length) this.grow();
    const i = (this.head + this.count) & (this.items.length - 1);
    this.items[i] = unit;
    this.events[i] = isEvent;
    this.count++;
    if (!isEvent) this.frames++;
  }

  /** True when the oldest unit is an event (events are not paced and need no credit). */
  get peekIsEvent(): boolean {
    return this.events[this.head] === true;
  }

  shift(): Buffer {
    if (this.count === 0) throw new RangeError('outbox is empty');
    const unit = this.items[this.head]!;
    if (!this.events[this.head]) this.frames--;
    this.items[this.head] = undefined;
    this.head = (this.head + 1) & (this.items.length - 1);
    this.count--;
    return unit;
  }

  clear(): void {
    this.items = new Array(64);
    this.events = new Array(64);
    this.head = 0;
    this.count = 0;
    this.frames = 0;
  }

  private grow(): void {
    const size = this.items.length;
    const items = new Array<Buffer | undefined>(size * 2);
    const events = new Array<boolean>(size * 2);
    for (let k = 0; k < this.count; k++) {
      items[k] = this.items[(this.head + k) & (size - 1)];
      events[k] = this.events[(this.head + k) & (size - 1)]!;
    }
    this.items = items;
    this.events = events;
    this.head = 0;
  }
}
