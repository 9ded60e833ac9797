import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, session } from './api.js';
import { Fleet } from './pages/Fleet.jsx';
import { Flows } from './pages/Flows.jsx';
import { Deployments } from './pages/Deployments.jsx';
import { DeploymentView } from './pages/DeploymentView.jsx';
import { NewDeployment } from './pages/NewDeployment.jsx';
import { Audit } from './pages/Audit.jsx';
import { ErrorBox } from './ui.jsx';
import './style.css';

// Hash routes (#/fleet, #/deployments/ID …): the server serves one page and needs no
// per-route fallback.
function useRoute() {
  const read = () => (location.hash.replace(/^#\/?/, '') || 'fleet').split('/').map(decodeURIComponent);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const f = () => setRoute(read());
    addEventListener('hashchange', f);
    return () => removeEventListener('hashchange', f);
  }, []);
  return route;
}

function SignIn({ onDone }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      // Who the token is: a wrong token gets 401 here, and the role decides what the console
      // offers (a viewer reads only; an enroller's token reads nothing the console shows).
      const who = await api('/whoami', { token: token.trim() });
      if (who.role === 'enroller') {
        throw new Error(`Token ${who.name} has the role enroller, which can only create enrollment tokens; sign in with a viewer, operator or admin token.`);
      }
      session.set(token.trim(), who);
      onDone();
    } catch (err) {
      setError(err.status === 401 ? new Error('That token is not valid for this coordinator.') : err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="signin">
      <form onSubmit={submit} class="card">
        <h1>Floe console</h1>
        <p class="muted">Sign in with an API token (the coordinator keeps it in DATA_DIR/api-token).</p>
        <label>
          API token
          <input id="token" type="password" autocomplete="off" value={token} onInput={(e) => setToken(e.target.value)} autofocus />
        </label>
        <ErrorBox error={error} />
        <button type="submit" class="primary" disabled={busy || !token.trim()}>
          {busy ? 'Checking…' : 'Sign in'}
        </button>
      </form>
    </div>
  );
}

const NAV = [
  ['fleet', 'Fleet'],
  ['flows', 'Flows'],
  ['deployments', 'Deployments'],
  ['audit', 'Audit'],
];

function App() {
  const [signedIn, setSignedIn] = useState(!!session.token());
  const route = useRoute();
  useEffect(() => session.onSignedOut(() => setSignedIn(false)), []);
  if (!signedIn) return <SignIn onDone={() => setSignedIn(true)} />;
  const [page, id, sub] = route;
  let body;
  if (page === 'flows') body = <Flows id={id} />;
  else if (page === 'deployments' && id === 'new') body = <NewDeployment />;
  else if (page === 'deployments' && id) body = <DeploymentView id={id} tab={sub} />;
  else if (page === 'deployments') body = <Deployments />;
  else if (page === 'audit') body = <Audit />;
  else body = <Fleet />;
  return (
    <div class="shell">
      <header>
        <span class="brand">Floe</span>
        <nav>
          {NAV.map(([p, label]) => (
            <a href={`#/${p}`} class={page === p || (p === 'fleet' && !NAV.some(([q]) => q === page)) ? 'active' : ''}>
              {label}
            </a>
          ))}
        </nav>
        <span class="muted small" id="who">
          {session.who().name} ({session.who().role}{session.canWrite() ? '' : ', read-only'})
        </span>
        <button
          class="link"
          onClick={() => {
            session.clear();
            setSignedIn(false);
          }}
        >
          Sign out
        </button>
      </header>
      <main>{body}</main>
    </div>
  );
}

render(<App />, document.getElementById('app'));
