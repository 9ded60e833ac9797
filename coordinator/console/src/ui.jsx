import { useCallback, useEffect, useRef, useState } from 'preact/hooks';

export function ErrorBox({ error }) {
  if (!error) return null;
  return (
    <div class="error" role="alert">
      {error.code ? <b>{error.code}: </b> : null}
      {error.message}
      {error.field ? <span class="muted"> (field {error.field})</span> : null}
    </div>
  );
}

/** Loads `load()` whenever `deps` change; gives {data, error, loading, reload}. */
export function useLoad(load, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const seq = useRef(0);
  const reload = useCallback(async () => {
    const n = ++seq.current;
    setState((s) => ({ ...s, loading: true }));
    try {
      const data = await load();
      if (n === seq.current) setState({ data, error: null, loading: false });
    } catch (error) {
      if (n === seq.current) setState((s) => ({ data: s.data, error, loading: false }));
    }
  }, deps);
  useEffect(() => {
    reload();
  }, [reload]);
  return { ...state, reload };
}

/**
 * Cursor paging: the API hands a `next` cursor; going back replays the cursor we came from.
 * Returns { cursor, next(c), prev(), reset(), pageNo }.
 */
export function useCursor() {
  const [stack, setStack] = useState([null]);
  return {
    cursor: stack[stack.length - 1],
    pageNo: stack.length,
    next: (c) => setStack((s) => [...s, c]),
    prev: () => setStack((s) => (s.length > 1 ? s.slice(0, -1) : s)),
    reset: () => setStack([null]),
  };
}

export function Pager({ paging, next, count }) {
  return (
    <div class="pager">
      <button onClick={paging.prev} disabled={paging.pageNo <= 1}>
        ← Previous
      </button>
      <span class="muted">
        page {paging.pageNo}
        {count !== undefined ? ` · ${count} shown` : ''}
      </span>
      <button onClick={() => next && paging.next(next)} disabled={!next}>
        Next →
      </button>
    </div>
  );
}

export function Badge({ value }) {
  return <span class={`badge b-${String(value || 'none').replace(/[^a-z_]/gi, '')}`}>{value ?? '—'}</span>;
}
