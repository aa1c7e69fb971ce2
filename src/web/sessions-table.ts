/**
 * The live table of every session on the gateway (GET /sessions, polled): state, ring fill,
 * listeners, frames sent, late frames, underruns and drops, and a stop button for each session
 * under way. Rows are kept by id and updated in place, so the table does not flicker; a click on
 * a row listens to that session.
 *
 * Sessions that have ended (finished, stopped, error, idle) are hidden, but for this page's own,
 * until asked for: the gateway keeps them while someone listens, and they would pile up.
 * Each cell carries its column's name (data-label), which narrow screens show in place of the
 * header row.
 */
import type { SessionSummary } from '../shared/gateway-api.js';
import { isUnderWay } from '../shared/session-state.js';
import { fmtCount, setText } from './ui.js';

/** Late frames matter once they are more than this share of the frames sent. */
export const LATE_ALERT_RATIO = 0.01;

export { isUnderWay };

interface Row {
  tr: HTMLTableRowElement;
  id: HTMLTableCellElement;
  state: HTMLSpanElement;
  fill: HTMLDivElement;
  ringText: HTMLSpanElement;
  listeners: HTMLTableCellElement;
  sent: HTMLTableCellElement;
  late: HTMLTableCellElement;
  underruns: HTMLTableCellElement;
  drops: HTMLTableCellElement;
  stop: HTMLButtonElement;
}

export interface SessionsTableActions {
  select(id: string): void;
  stop(id: string): void;
}

export class SessionsTable {
  private readonly rows = new Map<string, Row>();

  constructor(
    private readonly tbody: HTMLTableSectionElement,
    private readonly empty: HTMLElement,
    private readonly actions: SessionsTableActions,
  ) {}

  /** Shows the sessions (the ended ones only if `showEnded`); returns how many ended ones it hid. */
  update(sessions: readonly SessionSummary[], current: string | undefined, showEnded: boolean): number {
    const shown = sessions.filter((s) => showEnded || s.id === current || isUnderWay(s.state));
    const sorted = shown.sort((a, b) => (a.id === current ? -1 : b.id === current ? 1 : a.id.localeCompare(b.id)));
    const seen = new Set<string>();
    sorted.forEach((s, index) => {
      seen.add(s.id);
      const row = this.rows.get(s.id) ?? this.create(s.id);
      this.fill(row, s, s.id === current);
      if (this.tbody.children[index] !== row.tr) this.tbody.insertBefore(row.tr, this.tbody.children[index] ?? null);
    });
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
      }
    }
    this.empty.hidden = shown.length > 0;
    return sessions.length - shown.length;
  }

  private create(id: string): Row {
    const tr = document.createElement('tr');
    tr.dataset.session = id;
    tr.tabIndex = 0;
    tr.title = `Listen to ${id}`;
    const td = (label: string, cls?: string) => {
      const c = document.createElement('td');
      if (cls) c.className = cls;
      if (label) c.dataset.label = label;
      tr.append(c);
      return c;
    };
    const idCell = td('', 'id');
    idCell.textContent = id;
    const state = document.createElement('span');
    state.className = 'badge';
    td('', 'state').append(state);
    const ring = document.createElement('div');
    ring.className = 'ring';
    const bar = document.createElement('div');
    bar.className = 'bar';
    const fill = document.createElement('div');
    fill.className = 'fill';
    bar.append(fill);
    const ringText = document.createElement('span');
    ring.append(bar, ringText);
    td('Ring', 'ring-cell').append(ring);
    const stop = document.createElement('button');
    stop.type = 'button';
    stop.className = 'row-stop';
    // A square on a wide table; narrow cards have room for the word too.
    const label = document.createElement('span');
    label.className = 'label';
    label.textContent = 'Stop';
    stop.append('■', label);
    stop.title = `Stop ${id}`;
    stop.setAttribute('aria-label', `Stop session ${id}`);
    stop.addEventListener('click', (e) => {
      e.stopPropagation();
      this.actions.stop(id);
    });
    stop.addEventListener('keydown', (e) => e.stopPropagation());
    const row: Row = {
      tr,
      id: idCell,
      state,
      fill,
      ringText,
      listeners: td('Listeners', 'n'),
      sent: td('Sent', 'n'),
      late: td('Late', 'n'),
      underruns: td('Underruns', 'n'),
      drops: td('Drops', 'n'),
      stop,
    };
    td('', 'act').append(stop);
    tr.addEventListener('click', () => this.actions.select(id));
    tr.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        this.actions.select(id);
      }
    });
    this.rows.set(id, row);
    return row;
  }

  private fill(row: Row, s: SessionSummary, current: boolean): void {
    row.tr.setAttribute('aria-current', String(current));
    row.tr.dataset.state = s.state;
    row.state.dataset.state = s.state;
    setText(row.state, s.state);
    row.state.title = s.reason ?? '';
    const cap = Math.max(1, s.ringCapacityFrames);
    row.fill.style.width = `${Math.min(100, (100 * s.ringFrames) / cap).toFixed(1)}%`;
    setText(row.ringText, `${s.ringFrames}/${s.ringCapacityFrames}`);
    row.id.title = s.url ? `${s.id} · ${s.url} (${s.format})` : s.id;
    count(row.listeners, s.listeners, false, s.rtpSinks > 0 ? ` +${s.rtpSinks} rtp` : '');
    count(row.sent, s.sent, false);
    count(row.late, s.late, lateMatters(s));
    const share = s.sent > 0 ? ` (${((100 * s.late) / s.sent).toFixed(1)} %)` : '';
    row.late.title = `${fmtCount(s.late)} of ${fmtCount(s.sent)} frames sent more than 20 ms behind schedule${share}; red above ${LATE_ALERT_RATIO * 100} %`;
    count(row.underruns, s.underruns, s.underruns > 0);
    count(row.drops, s.dropped + s.skipped, s.dropped + s.skipped > 0);
    row.drops.title = `${s.dropped} dropped on ring overflow, ${s.skipped} skipped for slow listeners`;
    row.stop.hidden = !isUnderWay(s.state);
  }
}

/** A few late frames are absorbed by a listener's jitter buffer; a steady share of them is heard. */
export function lateMatters(s: Pick<SessionSummary, 'late' | 'sent'>): boolean {
  return s.late > 0 && s.late > s.sent * LATE_ALERT_RATIO;
}

function count(cell: HTMLTableCellElement, n: number, alert: boolean, suffix = ''): void {
  setText(cell, fmtCount(n) + suffix);
  cell.classList.toggle('zero', n === 0);
  cell.classList.toggle('alert', alert);
}
