/** The session outbox: FIFO order across growth, frame/event accounting. */
import { describe, expect, it } from 'vitest';
import { Outbox } from '../../../src/main/engine/outbox.js';

describe('Outbox', () => {
  it('keeps order and counts frames apart from events while it wraps and grows', () => {
    const box = new Outbox();
    let pushed = 0;
    let shifted = 0;
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 37; i++) box.push(Buffer.from([pushed % 256]), pushed++ % 5 === 0);
      for (let i = 0; i < 23; i++) {
        expect(box.peekIsEvent).toBe(shifted % 5 === 0);
        expect(box.shift()[0]).toBe(shifted++ % 256);
      }
    }
    expect(box.length).toBe(pushed - shifted);
    let frames = 0;
    for (let k = shifted; k < pushed; k++) if (k % 5 !== 0) frames++;
    expect(box.frames).toBe(frames);
    box.clear();
    expect(box.length).toBe(0);
    expect(box.frames).toBe(0);
    expect(() => box.shift()).toThrow(RangeError);
  });
});
