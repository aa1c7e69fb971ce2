import { describe, expect, it } from 'vitest';
import { Queue, type NewItem } from '../../../src/main/gateway/queue.js';
import type { QueueChange, QueueState } from '../../../src/shared/queue.js';

function items(...names: string[]): NewItem[] {
  return names.map((name) => ({ url: `tone:${name}`, format: 'opus', title: name, author: 'test', source: 'tone' }));
}

function titles(q: Queue): string[] {
  return q.snapshot().items.map((i) => i.title);
}

function current(q: Queue): string | undefined {
  return q.item(q.index)?.title;
}

describe('Queue', () => {
  it('adds at the end or at a position, the current item staying the same item', () => {
    const q = new Queue();
    expect(q.index).toBe(-1);
    expect(q.add(items('a', 'b'))).toBe(0);
    expect(q.index).toBe(0);
    q.select(1, 'jump');
    q.add(items('x'), 0);
    expect(titles(q)).toEqual(['x', 'a', 'b']);
    expect(current(q)).toBe('b');
    q.add(items('y'), 99);
    expect(titles(q)).toEqual(['x', 'a', 'b', 'y']);
  });

  it('removes and moves items, the index following the current item', () => {
    const q = new Queue();
    q.add(items('a', 'b', 'c', 'd'));
    q.select(2, 'jump');
    q.remove(0);
    expect(current(q)).toBe('c');
    q.move(1, 0); // c to the front
    expect(titles(q)).toEqual(['c', 'b', 'd']);
    expect(current(q)).toBe('c');
    q.move(2, 0); // d before c
    expect(current(q)).toBe('c');
    expect(q.index).toBe(1);
    q.move(0, 2); // d after c
    expect(q.index).toBe(0);
    q.remove(q.index); // the current one: what followed takes its place
    expect(current(q)).toBe('b');
    expect(() => q.remove(5)).toThrow(/out of range/);
    expect(() => q.move(0, 9)).toThrow(/out of range/);
  });

  it('says what follows under each repeat mode', () => {
    const q = new Queue();
    q.add(items('a', 'b', 'c'));
    expect([q.following(0), q.following(2)]).toEqual([1, undefined]);
    expect([q.after(), q.before()]).toEqual([1, undefined]);
    q.setRepeat('track');
    expect([q.following(0), q.following(2)]).toEqual([0, 2]);
    expect(q.after()).toBe(1); // next still moves on
    q.setRepeat('queue');
    expect([q.following(2), q.before()]).toEqual([0, 2]);
    q.select(2, 'jump');
    expect(q.after()).toBe(0);
  });

  it('shuffles only what is after the current item', () => {
    const q = new Queue();
    const names = Array.from({ length: 40 }, (_, i) => `t${i}`);
    q.add(items(...names));
    q.select(5, 'jump');
    q.shuffle();
    const after = titles(q);
    expect(after.slice(0, 6)).toEqual(names.slice(0, 6));
    expect([...after].sort()).toEqual([...names].sort());
    expect(after.slice(6)).not.toEqual(names.slice(6));
  });

  it('clears all but the item playing', () => {
    const q = new Queue();
    q.add(items('a', 'b', 'c'));
    q.select(1, 'jump');
    q.clear(1);
    expect(titles(q)).toEqual(['b']);
    expect(q.index).toBe(0);
    q.clear();
    expect(q.snapshot().items).toEqual([]);
    expect(q.index).toBe(-1);
  });

  it('tells every change, with the state a store keeps, and takes that state back', () => {
    const q = new Queue();
    const seen: [QueueChange, QueueState][] = [];
    q.onChange = (change, state) => seen.push([change, state]);
    q.add(items('a', 'b'));
    q.setRepeat('queue');
    q.select(1, 'next');
    expect(seen.map(([c]) => c)).toEqual(['add', 'repeat', 'next']);
    const saved = JSON.parse(JSON.stringify(seen[2]![1])) as QueueState;
    expect(saved).toMatchObject({ index: 1, repeat: 'queue', nextId: 3 });

    const back = new Queue();
    back.restore(saved);
    expect(back.snapshot()).toEqual(saved);
    // Ids go on from where they were: a restored queue never gives an id twice.
    back.add(items('c'));
    expect(back.snapshot().items.map((i) => i.id)).toEqual([1, 2, 3]);
  });

  it('refuses a state that is not a queue', () => {
    const q = new Queue();
    const good: QueueState = { items: [{ id: 1, url: 'tone:1', format: 'opus', title: 't', author: 'a', source: 'tone' }], index: 0, repeat: 'off', nextId: 2 };
    expect(() => q.restore({ ...good, index: 3 })).toThrow(/index 3/);
    expect(() => q.restore({ ...good, repeat: 'always' as never })).toThrow(/repeat/);
    expect(() => q.restore({ ...good, items: [{ id: 1 } as never] })).toThrow(/item/);
    expect(() => q.restore(null as never)).toThrow(/not an object/);
    expect(q.snapshot().items).toEqual([]);
  });
});
